"""Training checkpoints: atomic writes, full state (incl. RNG streams), resume.

A checkpoint is one ``torch.save`` file holding plain containers and tensors
only (so it loads with ``weights_only=True``): the step, the resolved
configuration, every module, optimiser, scheduler and gradient scaler state,
the stage's own state (EMA path length, code pools, ...), the position of the
data stream and the random states of torch (CPU and CUDA), numpy, Python and
the run's shared generator. Resuming from it continues bit for bit.

Files are written to a temporary name in the same folder, flushed to disk and
moved into place with ``os.replace``: a crash at any point leaves either the
previous file or the new one, never a partial file. The temporary files a
killed run leaves are removed when the next run in the folder starts
(:func:`remove_stale_temporaries`). Kept snapshots are independent copies of
``last.pt`` (not hard links), so rewriting ``last.pt`` never touches them.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..files import atomic_write

FORMAT = "sdic-training"
VERSION = 1
LAST = "last.pt"


# ---------------------------------------------------------------- atomic
def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_copy(source: Path, target: Path) -> Path:
    """Make ``target`` an independent copy of ``source`` (never a hard link), atomically."""
    return atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))


_TEMPORARY = re.compile(r"^\.?(?P<name>.+\.(?:pt|safetensors))\.tmp(?P<pid>\d*)$")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete the checkpoint and export temporaries (``.last.pt.tmp1234``, ``x.safetensors.tmp``)
    an interrupted run left in ``run_dir`` and its ``checkpoints/``; returns what was removed.

    A temporary tagged with the id of a process that is still running is left alone.
    """
    removed = []
    for folder in (Path(run_dir), checkpoint_dir(run_dir)):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            match = _TEMPORARY.match(path.name)
            if match is None or not path.is_file():
                continue
            if match["pid"] and int(match["pid"]) != os.getpid() and _process_alive(int(match["pid"])):
                continue
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# ------------------------------------------------------------------ RNG
def capture_rng() -> dict:
    """Global random states of Python, numpy and torch (CPU and every CUDA device)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, python_gauss = random.getstate()
    state = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss": python_gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------- the files
def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def last_checkpoint(run_dir: str | Path) -> Path | None:
    path = checkpoint_dir(run_dir) / LAST
    return path if path.is_file() else None


def save_training_state(state: dict, run_dir: str | Path, keep: bool) -> Path:
    """Write ``checkpoints/last.pt`` atomically; with ``keep`` also a copy ``step_XXXXXXXX.pt``."""
    folder = checkpoint_dir(run_dir)
    path = atomic_torch_save({"format": FORMAT, "version": VERSION, **state}, folder / LAST)
    if keep:
        atomic_copy(path, folder / f"step_{int(state['step']):08d}.pt")
    return path


def load_training_state(path: str | Path, stage: str | None = None) -> dict:
    """Read a training checkpoint (tensors and plain containers only)."""
    from ..checkpoints import CheckpointError, torch_load

    state = torch_load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an sdic training checkpoint")
    if stage is not None and state.get("stage") != stage:
        raise CheckpointError(f"{path}: a {state.get('stage')!r} training checkpoint, not {stage!r}")
    return state


def module_states(modules: dict[str, torch.nn.Module]) -> dict[str, dict]:
    return {name: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
            for name, m in modules.items()}


def load_module_states(modules: dict[str, torch.nn.Module], states: dict[str, dict]) -> None:
    missing = set(modules) - set(states)
    if missing:
        raise InputError(f"the checkpoint has no state for {sorted(missing)}")
    for name, module in modules.items():
        module.load_state_dict(states[name])


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def optimizer_states(optimizers: dict[str, Any]) -> dict[str, dict]:
    return {name: _to_cpu(opt.state_dict()) for name, opt in optimizers.items()}


def load_optimizer_states(optimizers: dict[str, Any], states: dict[str, dict]) -> None:
    for name, opt in optimizers.items():
        opt.load_state_dict(states[name])
