"""Typed training configurations: defaults, YAML files and ``key=value`` overrides.

One dataclass per stage (:class:`StyleGAN2Config`, :class:`E4EConfig`,
:class:`SDICTrainConfig`), built from nested parts shared by all stages
(:class:`RunConfig`, :class:`DataConfig`, :class:`OptimConfig`,
:class:`ReconstructionLossConfig`). :mod:`sdic.config_builder` turns the YAML
file and the ``key=value`` overrides into them: values are coerced to the
declared types (so ``run.steps=1e3`` or ``optim.lr=1e-3`` on the command line
work), choices are ``Literal`` types, unknown keys are errors with a
suggestion, and :func:`to_plain` gives the dict that is written into every
checkpoint, from which :func:`build` rebuilds the same run.

The network sizes are an :class:`sdic.config.SDICConfig`, given as ``model``:
a preset name (``tiny``, ``ffhq``, ``cars``) or a mapping with an optional
``preset`` key and any fields to change. For e4e and SDIC training the base is
the configuration stored in the starting checkpoint (see :func:`resolve_model`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .. import config_builder
from ..config import SDICConfig, preset
from ..config_builder import to_plain
from ..errors import ConfigError, MissingFileError

STAGES = ("stylegan2", "e4e", "sdic")


# ----------------------------------------------------------------- parts
@dataclass
class RunConfig:
    """The loop: length, batch, devices, logging and checkpoint cadence."""

    out: str = "runs/train"  # run folder: checkpoints/, exports, tb/, samples/, config.yaml
    steps: int = 100_000  # optimisation steps in total (resume continues up to it)
    batch_size: int = 8  # per process; the global batch is batch_size * world size
    seed: int = 0
    device: str = "auto"  # auto (cuda if available), cpu, cuda, cuda:N (under torchrun: cuda:LOCAL_RANK)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # fp16 only on CUDA, with a gradient scaler
    channels_last: bool = False  # channels-last memory format (a GPU speed option)
    threads: int = 0  # torch CPU threads per process; 0 = torch's default
    log_every: int = 50  # scalars (mean since the last log) to TensorBoard/metrics.jsonl
    image_every: int = 1000  # image grids (0 = never)
    val_every: int = 5000  # validation (0 = never; always at the end)
    val_batches: int = 4  # validation batches (batch_size images each)
    checkpoint_every: int = 1000  # rewrite checkpoints/last.pt and the exported models
    keep_every: int = 10_000  # also keep checkpoints/step_XXXXXXXX.pt (0 = never)
    tensorboard: bool = True
    progress: bool = True  # tqdm progress bar


@dataclass
class DataConfig:
    """An image folder (searched recursively), split into train and validation."""

    path: str = ""
    val_path: str = ""  # a separate validation folder; otherwise a split of ``path``
    val_fraction: float = 0.05
    val_max: int = 500
    split_seed: int = 0
    hflip: bool = True  # random horizontal flips (the authors' augmentation)
    align: bool = False  # FFHQ-align in-the-wild photos first (dlib; once, into <run.out>/aligned)
    workers: int = 2  # DataLoader worker processes per training process


@dataclass
class OptimConfig:
    """An optimiser: ``adam`` or ``ranger`` (RAdam + Lookahead + gradient centralisation)."""

    name: Literal["adam", "ranger"] = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    lookahead_k: int = 6  # ranger only
    lookahead_alpha: float = 0.5  # ranger only
    gradient_centralization: bool = True  # ranger only
    schedule: Literal["constant", "cosine"] = "constant"  # cosine: to 0 at run.steps
    warmup_steps: int = 0  # linear warm-up from 0


def ranger(lr: float) -> OptimConfig:
    """The Ranger settings of the pSp/e4e/SDIC code (betas .95/.999, eps 1e-5, k 6, alpha .5)."""
    return OptimConfig(name="ranger", lr=lr, betas=(0.95, 0.999), eps=1e-5)


def gan_adam(lr: float = 0.002) -> OptimConfig:
    return OptimConfig(name="adam", lr=lr, betas=(0.0, 0.99), eps=1e-8)


@dataclass
class ReconstructionLossConfig:
    """Weights of the reconstruction terms, computed at the input size (256 for the authors)."""

    l2: float = 1.0
    lpips: float = 0.8
    lpips_net: str = "alex"
    identity: float = 0.1
    # auto (sface for faces, alexnet otherwise) | sface | arcface:PATH (IR-SE50 file) | alexnet
    # (ImageNet AlexNet feature similarity, for non-face domains) | none
    identity_net: str = "auto"


# ---------------------------------------------------------------- stages
@dataclass
class StyleGAN2Config:
    """StyleGAN2 (rosinality recipe): non-saturating loss, lazy R1, EMA, mixing, path length."""

    model: dict = field(default_factory=lambda: {"preset": "tiny"})
    init: str = ""  # optional generator file (any load_generator source) to start G and g_ema from
    run: RunConfig = field(default_factory=lambda: RunConfig(out="runs/stylegan2", batch_size=16))
    data: DataConfig = field(default_factory=DataConfig)
    g_optim: OptimConfig = field(default_factory=gan_adam)
    d_optim: OptimConfig = field(default_factory=gan_adam)
    r1: float = 10.0
    r1_every: int = 16  # lazy R1 (0 = off)
    path_reg: float = 2.0  # path-length weight (0 = off)
    path_every: int = 4
    path_batch_shrink: int = 2
    path_decay: float = 0.01
    mixing: float = 0.9  # style-mixing probability
    ema_kimg: float = 10.0  # EMA half-life in thousands of images
    ema_rampup: float | None = None  # half-life <= ema_rampup x images seen (StyleGAN2-ADA uses 0.05)
    stddev_group: int = 4  # minibatch-stddev group (must divide the per-process batch)
    d_channel_multiplier: int = 0  # 0: the generator's
    discriminator: Literal["standard", "projected"] = "standard"  # StyleGAN2's | Projected GAN's (pretrained features)
    projected_size: int = 0  # projected: backbone input size (0: twice the generator size, at least 128)
    projected_channels: int = 64  # projected: CCM channels of the first scale (doubling per scale)
    projected_width: int = 128  # projected: channels of the per-scale discriminators
    diffaugment: str = ""  # DiffAugment policy, e.g. color,translation,cutout ("" = off)
    diffaugment_strength: float = 1.0  # 1: the published ranges, 0: identity
    latent_avg_samples: int = 4096
    fid_every: int = 0  # FID of g_ema vs the validation images (0 = never)
    fid_samples: int = 1000
    samples: int = 16  # images in the fixed-z sample grid


@dataclass
class E4EConfig:
    """e4e: W+ encoder with progressive deltas, delta regularisation and a latent discriminator."""

    model: dict = field(default_factory=dict)
    generator: str = ""  # StyleGAN2 checkpoint (ours or rosinality layout), frozen
    encoder_init: str = ""  # optional IR-SE50 file (ArcFace) for the encoder body, as e4e does
    init: str = ""  # optional e4e or SDIC file whose encoder this one starts from (fine-tuning)
    run: RunConfig = field(default_factory=lambda: RunConfig(out="runs/e4e", batch_size=8))
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=lambda: ranger(1e-4))
    losses: ReconstructionLossConfig = field(default_factory=lambda: ReconstructionLossConfig(identity=0.5))
    delta_reg: float = 2e-4  # weight of sum_i ||w_i - w_0||_2
    progressive_start: int = 20_000  # step at which delta 1 is switched on (-1: all from the start)
    progressive_every: int = 2_000  # then one more delta every N steps
    latent_disc: float = 0.1  # adversarial weight (0 = no latent discriminator)
    latent_disc_lr: float = 2e-5
    latent_disc_layers: int = 4
    r1: float = 10.0
    r1_every: int = 16
    w_pool: int = 50  # history pool of real/fake codes for the latent discriminator (0 = off)
    latent_avg_samples: int = 10_000
    noise: Literal["random", "fixed"] = "random"  # generator noise during training
    sync_batchnorm: bool = True  # under DDP, BN statistics over the global batch


@dataclass
class SDICTrainConfig:
    """SDIC: DIPN and DICN trained on a frozen e4e encoder and generator."""

    model: dict = field(default_factory=dict)
    e4e: str = ""  # e4e (or SDIC) checkpoint: frozen encoder, generator and latent_avg
    generator: str = ""  # optional StyleGAN2 checkpoint replacing the e4e file's generator
    init: str = ""  # optional SDIC checkpoint to start DIPN/DICN from (fine-tuning)
    run: RunConfig = field(default_factory=lambda: RunConfig(out="runs/sdic", batch_size=2))
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=lambda: ranger(1e-3))
    losses: ReconstructionLossConfig = field(default_factory=ReconstructionLossConfig)
    compensation: float = 0.5  # weight of the compensation regulariser
    compensation_feature: float = 0.8  # its mse(F, G7) share
    compensation_latent: float = 0.2  # its mse(W', W) share
    discrepancy: float = 0.0  # direct loss on D vs photo - clamp(e4e reconstruction)
    sync_batchnorm: bool = True  # under DDP, BN statistics over the global batch
    noise: Literal["random", "fixed"] = "random"  # generator noise during training
    val_metrics: tuple[str, ...] = ("mse", "lpips_alex")  # names from `sdic evaluate`


CONFIG_CLASSES: dict[str, type] = {"stylegan2": StyleGAN2Config, "e4e": E4EConfig, "sdic": SDICTrainConfig}
TrainConfig = StyleGAN2Config | E4EConfig | SDICTrainConfig


# ------------------------------------------------------- files, overrides
def parse_value(text: str) -> Any:
    """A command-line value: YAML scalars/lists (``true``, ``[1, 2]``, ``null``), else the string."""
    import yaml

    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def apply_override(data: dict, assignment: str) -> None:
    """Apply ``a.b.c=value`` to a nested mapping in place (creating levels as needed)."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {assignment!r} is not of the form key=value")
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if isinstance(child, str) and parts[0] == "model" and i == 0:  # model: tiny -> {preset: tiny}
            child = {"preset": child}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {assignment!r}: {'.'.join(parts[: i + 1])} is not a mapping")
        node[part] = child
        node = child
    node[parts[-1]] = parse_value(text)


def yaml_error_message(path: Path, error: Exception) -> str:
    """One line for a YAML syntax error: the file, line and column (1-based) and what is wrong."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{where}: not valid YAML ({problem})"


def read_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such configuration file")
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
    except yaml.YAMLError as error:
        raise ConfigError(yaml_error_message(path, error)) from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a text (UTF-8) file, byte {error.start}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def raw_config(stage: str, path: str | Path | None, overrides: list[str] = ()) -> dict:
    """The YAML file (if any) with the overrides applied, still untyped."""
    data = read_yaml(path) if path else {}
    declared = data.pop("stage", stage)
    if declared != stage:
        raise ConfigError(f"{path} is a {declared!r} configuration, not {stage!r}")
    for assignment in overrides:
        apply_override(data, assignment)
    return data


def build(stage: str, data: dict) -> TrainConfig:
    """A typed stage configuration from a plain mapping (defaults for what is missing)."""
    if stage not in CONFIG_CLASSES:
        raise ConfigError(f"unknown training stage {stage!r}; choose one of {', '.join(STAGES)}")
    data = dict(data)
    data.pop("stage", None)
    if isinstance(data.get("model"), str):
        data["model"] = {"preset": data["model"]}
    config = config_builder.build(CONFIG_CLASSES[stage], data)
    validate(config)
    return config


def load(stage: str, path: str | Path | None = None, overrides: list[str] = ()) -> TrainConfig:
    """Read a stage configuration: defaults <- YAML file <- ``key=value`` overrides."""
    return build(stage, raw_config(stage, path, overrides))


def validate(config: TrainConfig) -> None:
    """Cross-field checks that would otherwise fail deep inside training."""
    run = config.run
    if run.steps < 0 or run.batch_size < 1:
        raise ConfigError("run.steps must be >= 0 and run.batch_size >= 1")
    for name in ("log_every", "checkpoint_every"):
        if getattr(run, name) < 1:
            raise ConfigError(f"run.{name} must be at least 1")
    if isinstance(config, StyleGAN2Config):
        if run.batch_size % min(run.batch_size, config.stddev_group):
            raise ConfigError("stddev_group must divide run.batch_size")
        if config.path_reg > 0 and run.batch_size // config.path_batch_shrink < 1:
            raise ConfigError("run.batch_size // path_batch_shrink must be at least 1")
        _validate_discriminator(config)
    if isinstance(config, E4EConfig) and not config.generator:
        raise ConfigError("e4e training needs `generator:` (a StyleGAN2 checkpoint)")
    if isinstance(config, SDICTrainConfig) and not config.e4e:
        raise ConfigError("SDIC training needs `e4e:` (an e4e or SDIC checkpoint)")


def _validate_discriminator(config: StyleGAN2Config) -> None:
    from .diffaugment import parse_policy

    if config.projected_size < 0 or config.projected_channels < 1 or config.projected_width < 1:
        raise ConfigError("projected_size must be >= 0, projected_channels and projected_width >= 1")
    try:
        parse_policy(config.diffaugment)
    except ValueError as error:
        raise ConfigError(f"diffaugment: {error}") from None
    if not 0 <= config.diffaugment_strength <= 1:
        raise ConfigError(f"diffaugment_strength must be in [0, 1], got {config.diffaugment_strength}")


# ------------------------------------------------------------------ model
def resolve_model(spec: dict, base: SDICConfig | None = None) -> SDICConfig:
    """The model configuration: ``spec`` (changes, optionally on a ``preset``) over ``base``.

    Without ``preset`` and ``base`` the defaults of :class:`SDICConfig` (the faces model)
    are the base.
    """
    spec = dict(spec or {})
    name = spec.pop("preset", None)
    if name:
        start = preset(str(name))
    else:
        start = base if base is not None else SDICConfig()
    return config_builder.build(SDICConfig, spec, "model", base=start)


def model_spec(config: SDICConfig) -> dict:
    """A full, preset-free ``model`` mapping (what runs store, so they never depend on presets)."""
    return to_plain(config)


def dump_yaml(config: TrainConfig, stage: str) -> str:
    import yaml

    return yaml.safe_dump({"stage": stage, **to_plain(config)}, sort_keys=False)
