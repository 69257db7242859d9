"""Building blocks shared by the networks: equalised layers, FIR resampling, IR units.

Everything is plain PyTorch (no compiled extensions), so it runs on any device.
Parameter names follow the authors' checkpoints, which is what lets
``load_state_dict`` read them directly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


def fir_kernel(taps: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0), gain: float = 1.0) -> torch.Tensor:
    """Separable 2-D FIR kernel, normalised to sum ``gain``."""
    k = torch.tensor(taps, dtype=torch.float32)
    k2 = torch.outer(k, k)
    return k2 / k2.sum() * gain


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
    pad: tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve each channel with ``kernel``, downsample.

    ``pad`` = (before, after), applied to both spatial axes; negative values crop.
    The kernel is flipped, i.e. this is a true convolution.
    """
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    if p0 < 0 or p1 < 0:
        hh, ww = x.shape[-2:]
        x = x[..., max(-p0, 0): hh - max(-p1, 0), max(-p0, 0): ww - max(-p1, 0)]
    weight = torch.flip(kernel, (0, 1)).to(x.dtype)
    weight = weight.expand(c, 1, *kernel.shape).contiguous()
    x = F.conv2d(x, weight, groups=c)
    if down > 1:
        x = x[..., ::down, ::down]
    return x


def scaled_leaky_relu(x: torch.Tensor, slope: float = 0.2) -> torch.Tensor:
    """Leaky ReLU followed by a gain of sqrt(2) that keeps the activation variance."""
    return F.leaky_relu(x, slope) * SQRT2


class FusedLeakyReLU(nn.Module):
    """Bias add, leaky ReLU (0.2) and sqrt(2) gain; the bias lives here (``activate.bias``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return scaled_leaky_relu(x + self.bias.view(shape))


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights scaled by lr_mul/sqrt(fan_in) at run time."""

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation:
            return scaled_leaky_relu(F.linear(x, self.weight * self.scale) + self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate (weights scaled by 1/sqrt(fan_in) at run time)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
        padding: int = 0, bias: bool = True,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, self.stride, self.padding)


class BasicConv(nn.Module):
    """Convolution (2-D or 3-D, optionally transposed) without bias, then BN and LReLU(0.01).

    Without ``bn`` no BN module is built (the authors' files carry an unused one,
    which the checkpoint reader drops).
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, deconv: bool = False, is_3d: bool = False,
        bn: bool = True, relu: bool = True, **conv_kwargs: object,
    ) -> None:
        super().__init__()
        if is_3d:
            conv_cls = nn.ConvTranspose3d if deconv else nn.Conv3d
        else:
            conv_cls = nn.ConvTranspose2d if deconv else nn.Conv2d
        self.conv = conv_cls(in_channels, out_channels, bias=False, **conv_kwargs)
        norm = nn.BatchNorm3d if is_3d else nn.BatchNorm2d
        self.bn = norm(out_channels) if bn else None
        self.use_relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.use_relu:
            x = F.leaky_relu(x, 0.01)
        return x


class SqueezeExcite(nn.Module):
    """Channel attention: global pool, bottleneck 1x1 convs, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.adaptive_avg_pool2d(x, 1)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class IRUnit(nn.Module):
    """Improved-residual bottleneck (ArcFace), optionally with squeeze-excitation (IR-SE)."""

    def __init__(self, in_channels: int, depth: int, stride: int, se: bool = True) -> None:
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        layers: list[nn.Module] = [
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        ]
        if se:
            layers.append(SqueezeExcite(depth, 16))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def ir_body(
    stage_units: tuple[int, ...], stage_channels: tuple[int, ...], in_channels: int = 64,
    se: bool = True,
) -> nn.Sequential:
    """The four-stage IR(-SE) body; the first unit of every stage has stride 2."""
    units: list[nn.Module] = []
    channels = in_channels
    for count, depth in zip(stage_units, stage_channels):
        units.append(IRUnit(channels, depth, 2, se))
        units.extend(IRUnit(depth, depth, 1, se) for _ in range(count - 1))
        channels = depth
    return nn.Sequential(*units)


def ir_input_layer(out_channels: int = 64) -> nn.Sequential:
    """conv3x3 (no bias) -> BN -> PReLU, the stem of the IR(-SE) networks."""
    return nn.Sequential(
        nn.Conv2d(3, out_channels, 3, 1, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.PReLU(out_channels),
    )
