"""The loop shared by the three stages: data, steps, checks, logging, checkpoints, resume.

A stage (:mod:`.stylegan2`, :mod:`.e4e`, :mod:`.sdic`) implements :class:`Stage`;
:func:`run` does everything else:

* seeds, devices, the process group (:mod:`.distributed`) and mixed precision;
* an endless, resumable stream of training batches (:mod:`.data`);
* after every step, the loss terms are averaged over processes and checked:
  a NaN or infinite term stops the run with a message naming it and the
  learning-rate keys to lower (the last checkpoint, if one was written, is from
  before the bad step);
* progress bar, TensorBoard scalars and image grids (:mod:`.monitor`);
* checkpoints every ``run.checkpoint_every`` steps, at the end and when the run
  is stopped with Ctrl-C or SIGTERM (after the current step): ``last.pt`` plus
  ``step_XXXXXXXX.pt`` every ``run.keep_every``, and the exported models;
* ``resume=True`` restores everything and continues bit for bit; learning
  rates and ``run.precision`` may change on resume (the remedies of a NaN stop),
  as may the run folder's place; such changes are recorded in ``run.log``.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ..devices import warn_if_slow_bf16
from ..errors import SDICError
from . import checkpointing, distributed
from .config import ConfigError, TrainConfig, dump_yaml, to_plain
from .data import BatchStream, ImageFolder, aligned_config, build_datasets, frame_transform, validation_batches
from .distributed import DistContext
from .monitor import Monitor


class NonFiniteLossError(SDICError, RuntimeError):
    """A loss term became NaN or infinite."""


class ResumeError(SDICError, ValueError):
    """The run folder and the resume request do not fit together."""


# ------------------------------------------------------------- randomness
class SharedRandom:
    """Random numbers for the global batch, drawn identically on every process.

    Stages draw latents, noise maps and decisions for the *global* batch from
    here and keep their rows with ``ctx.shard``; so the result does not depend
    on how the batch is split over processes.
    """

    def __init__(self, seed: int, device: torch.device) -> None:
        self.device = device
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def normal(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.generator, device=self.device)

    def rand(self, *shape: int) -> torch.Tensor:
        """Uniform in [0, 1)."""
        return torch.rand(*shape, generator=self.generator, device=self.device)

    def uniform(self) -> float:
        return float(torch.rand((), generator=self.generator, device=self.device))

    def integer(self, low: int, high: int) -> int:
        """Uniform integer in [low, high)."""
        return int(torch.randint(low, high, (1,), generator=self.generator, device=self.device))

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])


# -------------------------------------------------------------- precision
class Precision:
    """Autocast (bf16/fp16) and, for fp16, a gradient scaler; fp32 is a no-op."""

    def __init__(self, mode: str, device: torch.device) -> None:
        self.mode = mode
        self.device = device
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]
        if mode == "fp16" and device.type != "cuda":
            raise ConfigError("run.precision=fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        if mode == "bf16":
            warn_if_slow_bf16(device, "run.precision=bf16")
        self.scaler = torch.amp.GradScaler(device.type, enabled=mode == "fp16")

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


@dataclass
class StageEnv:
    """What a stage needs from the loop: devices, randomness, precision, the update rule."""

    ctx: DistContext
    random: SharedRandom
    precision: Precision
    channels_last: bool = False

    def optimize(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """zero_grad, backward, average gradients over processes, step (scaled under fp16)."""
        optimizer.zero_grad(set_to_none=True)
        self.precision.scaler.scale(loss).backward()
        params = [p for g in optimizer.param_groups for p in g["params"]]
        distributed.average_gradients(params, self.ctx)
        self.precision.scaler.step(optimizer)

    def prepare(self, module: nn.Module) -> nn.Module:
        module = module.to(self.ctx.device)
        if self.channels_last:
            to_channels_last(module)
        return module

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        # the default dtype: float32 normally (float64 in numerical equivalence tests)
        images = images.to(self.ctx.device, dtype=torch.get_default_dtype(), non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images


def to_channels_last(module: nn.Module) -> nn.Module:
    """Channels-last memory format for the 4-D parameters and buffers (others, e.g. 5-D, unchanged)."""
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.dim() == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return module


class Stage(Protocol):
    """One training stage. ``config`` is the resolved configuration (model fully expanded)."""

    name: str
    config: TrainConfig
    resolution: int  # training images are resized to this
    frame: Any  # SDICConfig whose content rows frame the images (or None)

    def modules(self) -> dict[str, nn.Module]: ...
    def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...
    def schedulers(self) -> dict[str, Any]: ...
    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, torch.Tensor]: ...
    def validate(self, batches: Iterable[torch.Tensor], val_set: ImageFolder | None) -> dict[str, float]: ...
    def image_grids(self, batch: torch.Tensor) -> dict[str, torch.Tensor]: ...
    def export(self, folder: Path) -> list[Path]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


# ------------------------------------------------------------- stopping
class StopRequest:
    """Ctrl-C / SIGTERM set a flag; the loop saves and stops after the current step.

    A second Ctrl-C aborts at once (losing the work since the last checkpoint).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------ the checks
def reduce_terms(terms: dict[str, torch.Tensor], stop: bool, ctx: DistContext) -> tuple[dict[str, float], bool]:
    """Process-mean of every loss term (one all-reduce) and whether any process wants to stop."""
    names = list(terms)
    values = torch.stack([terms[n].detach().double().reshape(()) for n in names] +
                         [torch.tensor(float(stop), dtype=torch.float64, device=ctx.device)]) if names else \
        torch.tensor([float(stop)], device=ctx.device)
    values = distributed.mean_over_processes(values.to(ctx.device), ctx).cpu().tolist()
    return dict(zip(names, values[:-1])), values[-1] > 0


def check_finite(terms: dict[str, float], step: int, config: TrainConfig, saved_at: int | None) -> None:
    """Raise :class:`NonFiniteLossError` naming the bad terms, the remedies and what was kept.

    ``saved_at`` is the step of the run's last checkpoint (None: none written yet).
    """
    bad = [f"{name} = {value}" for name, value in terms.items() if not math.isfinite(value)]
    if not bad:
        return
    rates = learning_rates(config)
    now = ", ".join(f"{key}={value:g}" for key, value in rates.items())
    key, value = next(iter(rates.items()))
    if saved_at is None:
        kept, then = (f"no checkpoint was written yet (the first is at step {config.run.checkpoint_every})",
                      f"then start again (from step 0), e.g. with {key}={value / 2:g}")
    else:
        kept, then = (f"the last checkpoint (step {saved_at}, before this step) is kept",
                      f"then continue from it with --resume, e.g. --resume {key}={value / 2:g}")
    raise NonFiniteLossError(
        f"loss term {', '.join(bad)} at step {step}; training stopped and {kept}. Lower the learning "
        f"rate (now {now}), use run.precision=fp32 or check the data, {then}")


# ----------------------------------------------------------- checkpoints
RESUMABLE_CHANGES = {
    "run.steps", "run.log_every", "run.image_every", "run.val_every", "run.val_batches",
    "run.checkpoint_every", "run.keep_every", "run.tensorboard", "run.progress", "run.threads",
    "run.device", "data.workers", "fid_every", "fid_samples", "samples",
}
# Changes a resumed run accepts and records in run.log: the run folder's place (the checkpoint
# being read is in the new place, so it is the same run), the precision and the learning rates
# (the remedies a NaN stop names). Nothing in the saved state depends on them; other settings
# (loss weights, betas, schedules, sizes) would make the run another experiment and stay refused.
RECORDED_CHANGES = {"run.out", "run.precision"}


def is_learning_rate(key: str) -> bool:
    """Configuration keys holding an optimiser's learning rate (``optim.lr``, ``latent_disc_lr``)."""
    last = key.rsplit(".", 1)[-1]
    return last == "lr" or last.endswith("_lr")


def learning_rates(config: TrainConfig) -> dict[str, float]:
    """The learning-rate keys of a stage configuration and their values."""
    return {k: v for k, v in _flatten(to_plain(config)).items() if is_learning_rate(k)}


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def config_differences(saved: dict, current: dict, defaults: dict | None = None) -> list[str]:
    """Keys whose values differ, other than those a resumed run may change.

    A key the checkpoint does not have (an option added to sdic after it was
    written) counts as unchanged while the current value is its default.
    """
    a, b = _flatten(saved), _flatten(current)
    d = _flatten(defaults) if defaults is not None else {}
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k not in RESUMABLE_CHANGES and not _recorded(k)
            and not (k not in a and k in d and b.get(k) == d[k])]


def _recorded(key: str) -> bool:
    return key in RECORDED_CHANGES or is_learning_rate(key)


def recorded_changes(saved: dict, current: dict) -> dict[str, tuple[Any, Any]]:
    """The accepted changes a resume records: ``{key: (saved value, new value)}``."""
    a, b = _flatten(saved), _flatten(current)
    return {k: (a[k], b[k]) for k in sorted(set(a) & set(b)) if _recorded(k) and a[k] != b[k]}


def fresh_learning_rates(stage: Stage) -> dict[str, Any]:
    """The per-group rates the stage's optimisers and schedulers were built with (the new config's)."""
    return {"groups": {name: [(g["lr"], g.get("initial_lr")) for g in opt.param_groups]
                       for name, opt in stage.optimizers().items()},
            "base": {name: list(s.base_lrs) for name, s in stage.schedulers().items()}}


def apply_learning_rates(stage: Stage, fresh: dict[str, Any]) -> None:
    """After a restore, replace the checkpoint's learning rates by ``fresh`` ones, keeping the schedule.

    Optimiser and scheduler states carry their rates; the step counts and moments
    are kept, only the rates change (a scheduled rate is the new base rate times
    the schedule's factor at the restored step).
    """
    for name, optimizer in stage.optimizers().items():
        for group, (lr, initial) in zip(optimizer.param_groups, fresh["groups"][name], strict=True):
            group["lr"] = lr
            if initial is not None:
                group["initial_lr"] = initial
    for name, scheduler in stage.schedulers().items():
        scheduler.base_lrs = list(fresh["base"][name])
        rates = [base * factor(scheduler.last_epoch) for base, factor in zip(scheduler.base_lrs,
                                                                               scheduler.lr_lambdas)]
        for group, rate in zip(scheduler.optimizer.param_groups, rates, strict=True):
            group["lr"] = rate
        scheduler._last_lr = rates


def training_state(stage: Stage, step: int, env: StageEnv, stream: BatchStream) -> dict:
    return {
        "stage": stage.name,
        "step": step,
        "config": to_plain(stage.config),
        "world_size": env.ctx.world_size,
        "modules": checkpointing.module_states(stage.modules()),
        "optimizers": checkpointing.optimizer_states(stage.optimizers()),
        "schedulers": {k: s.state_dict() for k, s in stage.schedulers().items()},
        "scaler": env.precision.scaler.state_dict(),
        "stage_state": checkpointing._to_cpu(stage.state_dict()),
        "data": stream.state_dict(),
        "random": env.random.state_dict(),
        "rng": checkpointing.capture_rng(),
    }


def restore_state(state: dict, stage: Stage, env: StageEnv, stream: BatchStream) -> int:
    checkpointing.load_module_states(stage.modules(), state["modules"])
    checkpointing.load_optimizer_states(stage.optimizers(), state["optimizers"])
    for name, scheduler in stage.schedulers().items():
        scheduler.load_state_dict(state["schedulers"][name])
    if state.get("scaler"):
        env.precision.scaler.load_state_dict(state["scaler"])
    stage.load_state_dict(state["stage_state"])
    stream.load_state_dict(state["data"])
    env.random.load_state_dict(state["random"])
    checkpointing.restore_rng(state["rng"])
    return int(state["step"])


@dataclass
class RunResult:
    run_dir: Path
    step: int
    stopped: bool = False
    exports: list[Path] = field(default_factory=list)
    validation: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------ run
def _check_run_dir(run_dir: Path, resume: bool) -> Path | None:
    last = checkpointing.last_checkpoint(run_dir)
    if last is not None and not resume:
        raise ResumeError(
            f"{run_dir} already holds a training run (checkpoints/last.pt): continue it with "
            "--resume, or choose another folder with run.out=...")
    return last


def run(config: TrainConfig, build_stage: Callable[[TrainConfig, StageEnv], Stage], resume: bool = False) -> RunResult:
    """Train one stage from scratch or from the run folder's last checkpoint."""
    ctx = distributed.setup(config.run.device)
    try:
        return _run(config, build_stage, resume, ctx)
    finally:
        distributed.cleanup(ctx)


def _run(config: TrainConfig, build_stage, resume: bool, ctx: DistContext) -> RunResult:
    if config.run.threads > 0:
        torch.set_num_threads(config.run.threads)
    run_dir = Path(config.run.out)
    last = _check_run_dir(run_dir, resume)
    stale = checkpointing.remove_stale_temporaries(run_dir) if ctx.is_main else []
    distributed.barrier(ctx)
    checkpointing.seed_everything(config.run.seed)
    env = StageEnv(ctx, SharedRandom(config.run.seed, ctx.device), Precision(config.run.precision, ctx.device),
                   config.run.channels_last)
    stage = build_stage(config, env)
    for module in stage.modules().values():
        distributed.broadcast_module(module, ctx)
    data = aligned_config(config.data, run_dir, stage.resolution, ctx)
    train_set, val_set = build_datasets(data, frame_transform(stage.resolution, stage.frame))
    stream = BatchStream(train_set, ctx, config.run.batch_size, config.run.seed, config.data.hflip,
                         config.data.workers)
    step = 0
    changes: dict[str, tuple[Any, Any]] = {}
    if last is not None:
        step, changes = _resume(last, stage, env, stream)
    if ctx.is_main and (last is None or changes):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(dump_yaml(stage.config, stage.name), encoding="utf-8")
    monitor = Monitor(run_dir, config.run, stage.name, step, ctx.is_main)
    if stale:
        monitor.event(f"removed {len(stale)} temporary file(s) an interrupted run left: "
                      + ", ".join(p.name for p in stale))
    if last is not None:
        changed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changes.items())
        monitor.event(f"resumed {stage.name} training from {last} at step {step}"
                      + (f", with {changed}" if changed else ""))
    result = RunResult(run_dir, step)
    try:
        with StopRequest() as stop:
            result = _loop(stage, env, stream, val_set, monitor, run_dir, step, stop)
    finally:
        monitor.close()
    return result


def _resume(last: Path, stage: Stage, env: StageEnv, stream: BatchStream) -> tuple[int, dict[str, tuple[Any, Any]]]:
    """Check the checkpoint against the configuration, restore it; the step and the recorded changes."""
    state = checkpointing.load_training_state(last, stage.name)
    current = to_plain(stage.config)
    differences = config_differences(state["config"], current, to_plain(type(stage.config)()))
    if differences:
        raise ResumeError(f"{last}: the configuration differs from the checkpoint's in keys a resumed "
                          "run cannot change: " + "; ".join(differences[:8]))
    if int(state.get("world_size", 1)) * int(state["config"]["run"]["batch_size"]) != \
            env.ctx.world_size * stage.config.run.batch_size:
        raise ResumeError("the global batch (processes x run.batch_size) differs from the checkpoint's")
    changes = recorded_changes(state["config"], current)
    fresh = fresh_learning_rates(stage)
    step = restore_state(state, stage, env, stream)
    if any(is_learning_rate(key) for key in changes):
        apply_learning_rates(stage, fresh)
    return step, changes


def _fixed_batch(dataset: ImageFolder, batch_size: int) -> torch.Tensor:
    n = min(len(dataset), max(batch_size, 4))
    return torch.stack([dataset[i] for i in range(n)])


def _loop(stage: Stage, env: StageEnv, stream: BatchStream, val_set: ImageFolder | None, monitor: Monitor,
          run_dir: Path, step: int, stop: StopRequest) -> RunResult:
    run_cfg = stage.config.run
    ctx = env.ctx
    preview = _fixed_batch(val_set or stream.dataset, run_cfg.batch_size)
    saved_at = step if checkpointing.last_checkpoint(run_dir) is not None else None
    stopped = False
    while step < run_cfg.steps:
        batch = env.batch(stream.next())
        terms = stage.train_step(batch, step)
        env.precision.scaler.update()
        for scheduler in stage.schedulers().values():
            scheduler.step()
        step += 1
        values, stopped = reduce_terms(terms, stop.requested, ctx)
        try:
            check_finite(values, step, stage.config, saved_at)
        except NonFiniteLossError as error:
            monitor.event(str(error), echo=False)  # the caller reports the error itself
            raise
        monitor.accumulate(values)
        monitor.step(step)
        if run_cfg.image_every and step % run_cfg.image_every == 0 and ctx.is_main:
            monitor.images(step, stage.image_grids(env.batch(preview)))
        if run_cfg.val_every and step % run_cfg.val_every == 0 and step != run_cfg.steps:
            _validate(stage, env, val_set, monitor, step)
        if step % run_cfg.checkpoint_every == 0 or stopped:
            _save(stage, env, stream, run_dir, step, monitor)
            saved_at = step
        if stopped:
            monitor.message(f"stopped at step {step}; continue with --resume")
            break
    result = RunResult(run_dir, step, stopped)
    if not stopped:
        result.validation = _validate(stage, env, val_set, monitor, step)
        if ctx.is_main and run_cfg.image_every:
            monitor.images(step, stage.image_grids(env.batch(preview)))
        if saved_at != step or not checkpointing.last_checkpoint(run_dir):
            _save(stage, env, stream, run_dir, step, monitor)
    result.exports = sorted(p for p in run_dir.glob("*") if p.suffix in (".pt", ".safetensors"))
    return result


def _validate(stage: Stage, env: StageEnv, val_set: ImageFolder | None, monitor: Monitor, step: int) -> dict[str, float]:
    values: dict[str, float] = {}
    if env.ctx.is_main:
        batches = (env.batch(b) for b in validation_batches(val_set, stage.config.run.batch_size,
                                                           stage.config.run.val_batches))
        values = stage.validate(batches, val_set)
        if values:
            monitor.scalars(step, values, prefix="val")
            monitor.message(f"step {step} validation: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
    distributed.barrier(env.ctx)
    return values


def _save(stage: Stage, env: StageEnv, stream: BatchStream, run_dir: Path, step: int, monitor: Monitor) -> None:
    if env.ctx.is_main:
        keep = bool(stage.config.run.keep_every) and step % stage.config.run.keep_every == 0
        checkpointing.save_training_state(training_state(stage, step, env, stream), run_dir, keep)
        stage.export(run_dir)
    distributed.barrier(env.ctx)
