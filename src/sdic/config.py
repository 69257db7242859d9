"""One typed configuration for every network of an SDIC model.

The authors' faces and cars models are two presets of :class:`SDICConfig`;
small presets for tests and CPU training come from the same code. Every
derived number (latent count, tap block, noise and block resolutions, pyramid
sizes) is a property here, never a literal in the networks. Dicts and JSON
become configurations through :mod:`sdic.config_builder` (checked types, key
paths in errors), the builder the training and classifier configurations use too.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from . import config_builder
from .errors import ConfigError

# The first synthesis block after the 4x4 input upsamples to 8x8 = 2**FIRST_BLOCK_LOG.
FIRST_BLOCK_LOG = 3



def _log2(value: int, what: str) -> int:
    exponent = int(round(math.log2(value))) if value > 0 else 0
    if value <= 0 or 2**exponent != value:
        raise ConfigError(f"{what} must be a power of two, got {value}")
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
    def noise_resolutions(self) -> tuple[int, ...]:
        """Side of each noise map: 4 for the input conv, then two per block (8, 8, 16, 16, ...)."""
        return tuple(2 ** ((i + 5) // 2) for i in range(self.num_noise_layers))

    @property
    def block_resolutions(self) -> tuple[int, ...]:
        """Output side of each synthesis block j (8, 16, ..., size)."""
        return tuple(2**log_res for log_res in range(FIRST_BLOCK_LOG, self.log_size + 1))

    @staticmethod
    def block_index(resolution: int) -> int:
        """Index j of the synthesis block that upsamples to ``resolution`` (3 for 64, 4 for 128)."""
        return _log2(resolution, "block resolution") - FIRST_BLOCK_LOG

    @staticmethod
    def conv_index(resolution: int, upsampling: bool) -> int:
        """Index in ``convs`` of the upsampling (first) or the second conv of that block."""
        return 2 * GeneratorConfig.block_index(resolution) + (0 if upsampling else 1)

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
            raise ConfigError("the encoder body has exactly four stages")

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
    domain: Literal["faces", "cars"] = "faces"  # input framing and output crop
    # Bundled named edit directions: "ffhq", "cars" (the published ones), or a folder name under
    # sdic/data/directions holding <name>.safetensors files; "" for none.
    directions: str = ""
    # Rows of the generator output that hold the content (cars: 64..447 of 512).
    content_rows: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        tap_log = _log2(self.tap_resolution, "tap resolution")
        if not 3 <= tap_log < self.generator.log_size:
            raise ConfigError(
                f"tap resolution {self.tap_resolution} must lie between 8 and "
                f"{self.generator.size // 2}"
            )
        input_log = _log2(self.encoder.input_size, "encoder input size")
        if input_log <= tap_log:
            raise ConfigError("the encoder input must be larger than the tap resolution")
        if (self.dicn.shift_channels * self.tap_resolution**2) % self.generator.style_dim:
            raise ConfigError(
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
        return GeneratorConfig.block_index(self.tap_resolution)

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
        return config_builder.to_plain(self)

    def to_json(self) -> str:
        return config_builder.to_json(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SDICConfig:
        """A configuration from (partial) plain data; missing keys keep the defaults."""
        return config_builder.build(cls, data)

    @classmethod
    def from_json(cls, text: str) -> SDICConfig:
        return config_builder.from_json(cls, text)


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
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown preset {name!r}{hint}; choose one of {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()
