"""Building blocks shared by the networks: equalised layers, IR units, conv-BN-activation.

Everything is plain PyTorch (no compiled extensions), so it runs on any device.
Parameter names follow the authors' checkpoints, which is what lets
``load_state_dict`` read them directly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import (
    UsesExecution,
    bn_is_frozen,
    conv_bn_folded,
    conv_bn_ref,
    derived,
    fir_kernel,
    fold_bn,
    is_k4s2_transpose,
    polyphase_weight,
    set_derived,
    upfirdn2d,
)

__all__ = ["SQRT2", "BasicConv", "EqualConv2d", "EqualLinear", "FusedLeakyReLU", "IRUnit", "PixelNorm",
           "SqueezeExcite", "fir_kernel", "ir_body", "ir_input_layer", "scaled_leaky_relu", "upfirdn2d"]

SQRT2 = math.sqrt(2.0)


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


class BasicConv(UsesExecution, nn.Module):
    """Convolution (2-D or 3-D, optionally transposed) without bias, then BN and LReLU(0.01).

    Without ``bn`` no BN module is built (the authors' files carry an unused one,
    which the checkpoint reader drops). Under a frozen execution the BN is folded into
    the convolution (``ops.conv_bn_folded``) and the activation runs in place.
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

    def derive(self) -> None:
        if self.bn is not None and not bn_is_frozen(self.bn):
            return
        weight, bias = fold_bn(self.conv, self.bn) if self.bn is not None else (self.conv.weight, None)
        set_derived(self, "weight", weight)
        if bias is not None:
            set_derived(self, "bias", bias)
        if self.execution.polyphase and is_k4s2_transpose(self.conv):
            set_derived(self, "phase_weight", polyphase_weight(weight))

    def folded(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """(weight, bias) with the BN folded in, where the execution derived them."""
        weight = derived(self, "weight")
        if weight is None or (self.bn is not None and self.bn.training):
            return None
        return weight, derived(self, "bias")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        folded = self.folded()
        if folded is None:
            x = conv_bn_ref(self.conv, self.bn, x)
            return F.leaky_relu(x, 0.01) if self.use_relu else x
        x = conv_bn_folded(self.conv, x, *folded, derived(self, "phase_weight"))
        return F.leaky_relu_(x, 0.01) if self.use_relu else x


class SqueezeExcite(nn.Module):
    """Channel attention: global pool, bottleneck 1x1 convs, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))  # [B, C]
        hidden = F.relu(F.linear(pooled, self.fc1.weight.flatten(1)))
        return torch.sigmoid(F.linear(hidden, self.fc2.weight.flatten(1)))[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class IRUnit(UsesExecution, nn.Module):
    """Improved-residual bottleneck (ArcFace), optionally with squeeze-excitation (IR-SE).

    ``res_layer`` = BN, conv3x3, PReLU, conv3x3 (stride), BN[, SE] (the checkpoints' names).
    Under a frozen execution the BN after the second conv (and in the shortcut) is folded into
    the convolution, the 1x1 max-pool shortcut is a strided view, and the gate and residual
    sum are one fused multiply-add.
    """

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
        self.stride = stride

    def derive(self) -> None:
        bn_in, _, _, conv2, bn_out = list(self.res_layer)[:5]
        if not (bn_is_frozen(bn_in) and bn_is_frozen(bn_out)):
            return
        weight, bias = fold_bn(conv2, bn_out)
        set_derived(self, "weight", weight)
        set_derived(self, "bias", bias)
        if isinstance(self.shortcut_layer, nn.Sequential):
            conv, bn = self.shortcut_layer
            weight, bias = fold_bn(conv, bn)
            set_derived(self, "shortcut_weight", weight)
            set_derived(self, "shortcut_bias", bias)

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.shortcut_layer, nn.MaxPool2d):
            return x if self.stride == 1 else x[..., :: self.stride, :: self.stride]
        conv = self.shortcut_layer[0]
        return conv_bn_folded(conv, x, derived(self, "shortcut_weight"), derived(self, "shortcut_bias"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = derived(self, "weight")
        if weight is None or self.res_layer[0].training:
            return self.res_layer(x) + self.shortcut_layer(x)
        bn_in, conv1, prelu, conv2 = list(self.res_layer)[:4]
        y = prelu(conv1(bn_in(x)))
        y = conv_bn_folded(conv2, y, weight, derived(self, "bias"))
        shortcut = self._shortcut(x)
        if len(self.res_layer) > 5:
            return torch.addcmul(shortcut, y, self.res_layer[5].gate(y))
        return y.add_(shortcut)


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
