"""StyleGAN2 generator in the rosinality layout, with the SDIC feature tap.

Synthesis is split at the tap (the upsampling conv of the ``tap_resolution``
block, 64x64 for the authors' models) so that SDIC can read the tap feature
``G7``, replace it, and reuse everything computed before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import ops
from ..config import GeneratorConfig
from ..ops import UsesExecution, derived, fir_kernel, fp32_region, micro_batched, set_derived, upfirdn2d
from .layers import SQRT2, EqualLinear, FusedLeakyReLU, PixelNorm


class ModulatedConv2d(UsesExecution, nn.Module):
    """Style-modulated convolution (``ops.modulated_conv2d``).

    ``forward(x, w, bias, gain)`` returns ``gain * conv(x) + bias`` (the upsampling conv:
    blurred first), which lets the styled conv fold its activation gain and bias into the
    convolution. Which of the op's two formulations runs is ``ops.prefers_per_sample`` under
    the module's execution.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, style_dim: int,
        demodulate: bool = True, upsample: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)
        self.demodulate = demodulate
        self.upsample = upsample
        self.padding = kernel_size // 2
        if upsample:
            self.blur = _BlurKernel()

    def derive(self) -> None:
        if self.demodulate:
            set_derived(self, "energy", ops.demodulation_energy(self.weight[0]))
        dtype = self.execution.weight_dtype
        if dtype is not None and dtype != self.weight.dtype:
            set_derived(self, "cast_weight", self.weight[0].to(dtype))

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, gain: float = 1.0,
    ) -> torch.Tensor:
        weight = self.weight[0]
        with fp32_region(x):
            styles = self.modulation(w.float())  # [B, in]
        return ops.modulated_conv2d(
            x, weight, styles, demodulate=self.demodulate, padding=self.padding,
            blur=self.blur.kernel if self.upsample else None, bias=bias, gain=gain,
            per_sample=ops.prefers_per_sample(x, weight, self.execution),
            energy=derived(self, "energy"), cast_weight=derived(self, "cast_weight"),
        )


class _BlurKernel(nn.Module):
    """Holds the x4 FIR kernel of the blur after an upsampling conv (``blur.kernel`` in the files)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", fir_kernel(gain=4.0))


class _Upsample(nn.Module):
    """2x FIR upsampling of the RGB skip (zero insertion, x4 kernel, pads (2, 1))."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", fir_kernel(gain=4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=2, pad=(2, 1))


class NoiseInjection(nn.Module):
    """The per-layer noise strength (``noise.weight``); applied in :class:`StyledConv`."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))


class StyledConv(nn.Module):
    """Modulated conv -> noise -> bias + scaled leaky ReLU.

    Computed as ``leaky_relu(g*conv + g*bias + g*w_noise*noise)`` with g = sqrt(2)
    folded into the convolution (leaky ReLU is positively homogeneous), the bias
    inside the convolution, and the noise and activation applied in place: one
    pass over the output after the convolution instead of five.
    """

    def __init__(
        self, in_channels: int, out_channels: int, style_dim: int, upsample: bool = False,
        clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)
        self.clamp = clamp  # NVIDIA's conv_clamp (None: no clipping)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = self.conv(x, w, self.activate.bias * SQRT2, gain=SQRT2)
        return ops.add_noise_leaky_relu_(out, noise, self.noise.weight * SQRT2, self.clamp)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation) plus the upsampled previous RGB.

    The RGB skip is kept in fp32 (it is 3 channels; under bf16 autocast only the
    convolution runs in bf16).
    """

    def __init__(self, in_channels: int, style_dim: int, upsample: bool = True, clamp: float | None = None) -> None:
        super().__init__()
        if upsample:
            self.upsample = _Upsample()
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.clamp = clamp  # NVIDIA's conv_clamp, before the skip is added

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, w, self.bias.view(-1)).float()
        if self.clamp is not None:
            out = ops.clamp_(out, self.clamp)
        if skip is not None:
            with fp32_region(out):
                out = out.add_(self.upsample(skip.float()))
        return out


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


@dataclass
class TapState:
    """Synthesis state at the tap: the tap feature and the RGB skip so far."""

    feature: torch.Tensor | None
    skip: torch.Tensor


NOISE_MODES = ("const", "none", "random")


class Generator(UsesExecution, nn.Module):
    """StyleGAN2 generator: mapping network ``style`` and the synthesis layers.

    Besides the split synthesis SDIC needs (:meth:`to_tap`, :meth:`from_tap`), it answers
    NVIDIA's calls: ``G.mapping(z, truncation_psi=...)`` -> W+ and ``G.synthesis(ws,
    noise_mode=...)`` -> image, with ``G.num_ws``, ``G.w_dim``, ``G.z_dim``.
    """

    def __init__(self, config: GeneratorConfig, tap_resolution: int | None = None) -> None:
        super().__init__()
        self.config = config
        style_dim, clamp = config.style_dim, config.conv_clamp
        self.style = nn.Sequential(
            PixelNorm(),
            *[EqualLinear(config.z_size if i == 0 else style_dim, style_dim, lr_mul=config.lr_mlp, activation=True)
              for i in range(config.n_mlp)],
        )
        self.input = ConstantInput(config.channels(4))
        self.conv1 = StyledConv(config.channels(4), config.channels(4), style_dim, clamp=clamp)
        self.to_rgb1 = ToRGB(config.channels(4), style_dim, upsample=False, clamp=clamp)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_ch = config.channels(4)
        for resolution in config.block_resolutions:
            out_ch = config.channels(resolution)
            self.convs.append(StyledConv(in_ch, out_ch, style_dim, upsample=True, clamp=clamp))
            self.convs.append(StyledConv(out_ch, out_ch, style_dim, clamp=clamp))
            self.to_rgbs.append(ToRGB(out_ch, style_dim, clamp=clamp))
            in_ch = out_ch
        self.noises = nn.Module()
        for i, res in enumerate(config.noise_resolutions):
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        # The W average truncation moves toward: set from the file (set_w_avg), else estimated
        # on first use. Not part of the state dict (files keep it as their latent_avg).
        self.register_buffer("w_avg", None, persistent=False)
        tap = tap_resolution if tap_resolution is not None else config.size // 2
        self.tap_block = config.block_index(tap)

    @property
    def n_latent(self) -> int:
        return self.config.n_latent

    @property
    def num_ws(self) -> int:
        """W+ entries (NVIDIA's name for :attr:`n_latent`)."""
        return self.config.n_latent

    @property
    def w_dim(self) -> int:
        return self.config.style_dim

    @property
    def z_dim(self) -> int:
        return self.config.z_size

    @property
    def img_resolution(self) -> int:
        return self.config.size

    @property
    def img_channels(self) -> int:
        return 3

    def fixed_noise(self) -> list[torch.Tensor]:
        return [getattr(self.noises, f"noise_{i}") for i in range(self.config.num_noise_layers)]

    def random_noise(self, batch: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Fresh noise maps for ``batch`` samples, one per noise layer (``noise_mode="random"``)."""
        device = self.input.input.device
        return [torch.randn(batch, 1, side, side, device=device, generator=generator)
                for side in self.config.noise_resolutions]

    def z_to_w(self, z: torch.Tensor) -> torch.Tensor:
        """Map z [B, z_dim] to w [B, w_dim] (the mapping network, no broadcast or truncation)."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, seed: int = 0) -> torch.Tensor:
        """The mean w [1, w_dim] of ``n`` seeded z."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=g).to(self.input.input.device)
        return self.z_to_w(z).mean(0, keepdim=True)

    def set_w_avg(self, w_avg: torch.Tensor) -> None:
        """Use ``w_avg`` ([w_dim], or one row per W+ entry) as the truncation target."""
        w_avg = w_avg.detach().float().reshape(-1, self.w_dim)
        if w_avg.shape[0] not in (1, self.num_ws):
            raise ValueError(f"w_avg has {w_avg.shape[0]} rows; expected 1 or {self.num_ws}")
        if torch.equal(w_avg, w_avg[:1].expand_as(w_avg)):
            w_avg = w_avg[:1]  # e4e and our exports repeat one average per entry
        self.w_avg = (w_avg[0] if w_avg.shape[0] == 1 else w_avg).to(self.input.input.device)

    def mapping(
        self, z: torch.Tensor, c: None = None, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
    ) -> torch.Tensor:
        """NVIDIA's mapping: z [B, z_dim] -> W+ [B, num_ws, w_dim], truncated toward ``w_avg``.

        ``truncation_psi`` < 1 moves every entry (the first ``truncation_cutoff`` ones if
        given) toward the generator's W average. ``c`` (class labels) must be None: only
        unconditional generators exist here.
        """
        if c is not None:
            raise ValueError("conditional generators (class labels c) are not supported; pass c=None")
        ws = self.z_to_w(z)[:, None].repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            if self.w_avg is None:
                self.w_avg = self.mean_latent(10_000)[0]
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = self.w_avg.expand_as(ws)[:, :cutoff].lerp(ws[:, :cutoff], truncation_psi)
        return ws

    def noise_for(self, mode: str, batch: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Noise inputs for ``noise_mode`` ``const`` (the fixed buffers), ``none`` (zeros) or ``random``."""
        if mode == "const":
            return self.fixed_noise()
        if mode == "none":
            return [torch.zeros_like(n) for n in self.fixed_noise()]
        if mode == "random":
            return self.random_noise(batch, generator)
        raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {mode!r}")

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        """NVIDIA's synthesis: W+ [B, num_ws, w_dim] -> float image [B, 3, R, R] (unclamped, about [-1, 1])."""
        if ws.ndim != 3 or tuple(ws.shape[1:]) != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [B, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        image, _ = self(ws, self.noise_for(noise_mode, ws.shape[0]))
        return image

    def to_tap(
        self, w: torch.Tensor, noise: list[torch.Tensor] | None = None, compute_tap: bool = True,
    ) -> TapState:
        """Run synthesis up to and including the tap conv (skipped if ``compute_tap`` is False)."""
        noise = noise if noise is not None else self.fixed_noise()
        x = self.input(w.shape[0]).contiguous(memory_format=torch.channels_last)
        x = self.conv1(x, w[:, 0], noise[0])
        skip = self.to_rgb1(x, w[:, 1])
        for j in range(self.tap_block):
            i = 1 + 2 * j
            x = self.convs[2 * j](x, w[:, i], noise[2 * j + 1])
            x = self.convs[2 * j + 1](x, w[:, i + 1], noise[2 * j + 2])
            skip = self.to_rgbs[j](x, w[:, i + 2], skip)
        feature = None
        if compute_tap:
            j = self.tap_block
            feature = self.convs[2 * j](x, w[:, 1 + 2 * j], noise[2 * j + 1])
        return TapState(feature, skip)

    @micro_batched(1)
    def from_tap(
        self, w: torch.Tensor, feature: torch.Tensor, skip: torch.Tensor,
        noise: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Continue synthesis from a (possibly replaced) tap feature to the RGB image.

        With ``execution.split_batches`` a batch goes through these layers one sample at a
        time: the layers modulate their weights per sample anyway, and this way no
        full-resolution feature map is ever concatenated across the batch.
        """
        noise = noise if noise is not None else self.fixed_noise()
        x = feature.contiguous(memory_format=torch.channels_last)
        for j in range(self.tap_block, len(self.to_rgbs)):
            i = 1 + 2 * j
            if j != self.tap_block:
                x = self.convs[2 * j](x, w[:, i], noise[2 * j + 1])
            x = self.convs[2 * j + 1](x, w[:, i + 1], noise[2 * j + 2])
            skip = self.to_rgbs[j](x, w[:, i + 2], skip)
        return skip

    def forward(
        self, w: torch.Tensor, noise: list[torch.Tensor] | None = None,
        tap_feature: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Synthesise from W+ ``w`` [B, n_latent, style_dim]; return (image, tap feature).

        With ``tap_feature`` the tap is replaced by it (and the tap conv is not run).
        """
        state = self.to_tap(w, noise, compute_tap=tap_feature is None)
        feature = state.feature if tap_feature is None else tap_feature
        return self.from_tap(w, feature, state.skip, noise), state.feature
