"""One typed configuration for every network of an SDIC model.

The authors' faces and cars models are two presets of :class:`SDICConfig`;
small presets for tests and CPU training come from the same code. Every
derived number (latent count, tap block, pyramid sizes) is a property here,
never a literal in the networks.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any


def _log2(value: int, what: str) -> int:
    exponent = int(round(math.log2(value)))
    if value <= 0 or 2**exponent != value:
        raise ValueError(f"{what} must be a power of two, got {value}")
    return exponent


@dataclass(frozen=True)
class GeneratorConfig:
    """StyleGAN2 generator (rosinality layout)."""

    size: int = 1024
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    max_channels: int = 512
    base_channels: int = 16384  # channels(r) = min(max, base * multiplier / r) above 32
    lr_mlp: float = 0.01
    # Generators converted from elsewhere (NVIDIA pickles); None keeps rosinality's behaviour.
    z_dim: int | None = None  # mapping input width (None: style_dim)
    conv_clamp: float | None = None  # clamp of every conv and to-RGB output to +-conv_clamp
    channel_widths: tuple[int, ...] | None = None  # channels at 4, 8, ..., size (None: the rule above)

    def __post_init__(self) -> None:
        if self.channel_widths is not None and len(self.channel_widths) != self.log_size - 1:
            raise ValueError(f"channel_widths needs {self.log_size - 1} entries (4 to {self.size}), "
                             f"got {len(self.channel_widths)}")

    @property
    def log_size(self) -> int:
        return _log2(self.size, "generator size")

    @property
    def n_latent(self) -> int:
        """Number of W+ entries: 2*log2(size) - 2 (18 at 1024, 16 at 512)."""
        return 2 * self.log_size - 2

    @property
    def num_noise_layers(self) -> int:
        return 2 * (self.log_size - 2) + 1

    @property
    def z_size(self) -> int:
        """Width of the mapping network's input z."""
        return self.style_dim if self.z_dim is None else self.z_dim

    def channels(self, resolution: int) -> int:
        """Feature channels at a resolution (512 up to 64 for the authors' models)."""
        if self.channel_widths is not None:
            return self.channel_widths[_log2(resolution, "resolution") - 2]
        if resolution <= 32:
            return self.max_channels
        scaled = self.base_channels * self.channel_multiplier // resolution
        return max(1, min(self.max_channels, scaled))


@dataclass(frozen=True)
class EncoderConfig:
    """e4e encoder: an IR-SE body with a feature pyramid and per-latent style heads."""

    input_size: int = 256
    stage_units: tuple[int, ...] = (3, 4, 14, 3)  # IR-SE-50
    stage_channels: tuple[int, ...] = (64, 128, 256, 512)
    coarse_index: int = 3
    middle_index: int = 7

    def __post_init__(self) -> None:
        if len(self.stage_units) != 4 or len(self.stage_channels) != 4:
            raise ValueError("the encoder body has exactly four stages")

    @property
    def tap_units(self) -> tuple[int, int, int]:
        """Body unit indices of the c1, c2, c3 pyramid taps (6, 20, 23 for IR-SE-50)."""
        ends = [sum(self.stage_units[: i + 1]) - 1 for i in range(4)]
        return ends[1], ends[2], ends[3]

    def style_spatial(self, index: int) -> int:
        """Input resolution of style head ``index`` (16/32/64 for a 256 input)."""
        if index < self.coarse_index:
            return self.input_size // 16
        if index < self.middle_index:
            return self.input_size // 8
        return self.input_size // 4


@dataclass(frozen=True)
class DIPNConfig:
    """Discrepancy information prediction network widths (the authors' values)."""

    feature_channels: tuple[int, int, int, int, int] = (16, 24, 32, 96, 160)
    level0_channels: int = 48
    descriptor_channels: int = 24
    stem_channels: int = 8
    hourglass_channels: tuple[int, int, int] = (16, 32, 48)
    head_channels: int = 16

    @property
    def volume_depth(self) -> int:
        return 2 * self.descriptor_channels


@dataclass(frozen=True)
class DICNConfig:
    """Discrepancy information compensation network."""

    stem_channels: int = 32
    semantic_channels: int = 64
    shift_channels: int = 18  # condition_shift3 output maps, reshaped to latent tokens


@dataclass(frozen=True)
class SDICConfig:
    """Everything needed to build an SDIC model (generator, e4e, DIPN, DICN)."""

    name: str = "ffhq"
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    dipn: DIPNConfig = field(default_factory=DIPNConfig)
    dicn: DICNConfig = field(default_factory=DICNConfig)
    tap_resolution: int = 64
    domain: str = "faces"  # "faces" or "cars": input framing and output crop
    # Bundled named edit directions: "ffhq", "cars" (the published ones), or a folder name under
    # sdic/data/directions holding <name>.safetensors files; "" for none.
    directions: str = ""
    # Rows of the generator output that hold the content (cars: 64..447 of 512).
    content_rows: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        tap_log = _log2(self.tap_resolution, "tap resolution")
        if not 3 <= tap_log < self.generator.log_size:
            raise ValueError(
                f"tap resolution {self.tap_resolution} must lie between 8 and "
                f"{self.generator.size // 2}"
            )
        input_log = _log2(self.encoder.input_size, "encoder input size")
        if input_log <= tap_log:
            raise ValueError("the encoder input must be larger than the tap resolution")
        if (self.dicn.shift_channels * self.tap_resolution**2) % self.generator.style_dim:
            raise ValueError(
                "dicn.shift_channels * tap_resolution^2 must be a multiple of style_dim"
            )

    @property
    def n_latent(self) -> int:
        return self.generator.n_latent

    @property
    def input_size(self) -> int:
        return self.encoder.input_size

    @property
    def tap_block(self) -> int:
        """Index j of the synthesis block whose upsampling conv is the tap (3 for 64)."""
        return _log2(self.tap_resolution, "tap resolution") - 3

    @property
    def tap_latent_index(self) -> int:
        """W+ entry consumed by the tap layer (7 for a 64x64 tap)."""
        return 1 + 2 * self.tap_block

    @property
    def tap_channels(self) -> int:
        return self.generator.channels(self.tap_resolution)

    @property
    def dicn_downsamplings(self) -> int:
        """Stride-2 stages from the discrepancy map to the tap (2 for 256 -> 64)."""
        return _log2(self.input_size // self.tap_resolution, "input/tap ratio")

    @property
    def shift_tokens(self) -> int:
        """Rows of the DICN latent shift: shift_channels*tap^2/style_dim (144 for the authors)."""
        return self.dicn.shift_channels * self.tap_resolution**2 // self.generator.style_dim

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SDICConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SDIC config fields: {sorted(unknown)}")
        parts = {
            "generator": GeneratorConfig,
            "encoder": EncoderConfig,
            "dipn": DIPNConfig,
            "dicn": DICNConfig,
        }
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in parts:
                kwargs[key] = _build_dataclass(parts[key], value)
            elif key == "content_rows" and value is not None:
                kwargs[key] = tuple(value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> SDICConfig:
        return cls.from_dict(json.loads(text))


def _build_dataclass(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def ffhq() -> SDICConfig:
    """The authors' faces model: FFHQ StyleGAN2 at 1024x1024, 18 latents."""
    return SDICConfig(name="ffhq", generator=GeneratorConfig(size=1024), directions="ffhq")


def cars() -> SDICConfig:
    """The authors' cars model: the LSUN cars StyleGAN2 at 512x512, 16 latents."""
    return SDICConfig(
        name="cars",
        generator=GeneratorConfig(size=512),
        domain="cars",
        content_rows=(64, 448),
        directions="cars",
    )


def tiny(size: int = 32) -> SDICConfig:
    """A few-megabyte model for tests: same code paths, narrow widths."""
    style_dim = 32
    return SDICConfig(
        name=f"tiny{size}",
        generator=GeneratorConfig(
            size=size, style_dim=style_dim, n_mlp=2, max_channels=32,
            base_channels=16 * size // 2, channel_multiplier=1,
        ),
        encoder=EncoderConfig(
            input_size=64, stage_units=(1, 1, 2, 1), stage_channels=(16, 16, 32, style_dim),
        ),
        dipn=DIPNConfig(
            feature_channels=(4, 6, 8, 12, 16),
            level0_channels=8, descriptor_channels=8, stem_channels=4,
            hourglass_channels=(4, 8, 8), head_channels=4,
        ),
        dicn=DICNConfig(stem_channels=8, semantic_channels=8, shift_channels=8),
        tap_resolution=16,
    )


PRESETS = {"ffhq": ffhq, "cars": cars, "tiny": tiny}


def preset(name: str) -> SDICConfig:
    """Look up a preset by name (``ffhq``, ``cars``, ``tiny``)."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
