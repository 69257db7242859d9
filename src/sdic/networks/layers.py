"""Building blocks shared by the networks: equalised layers, FIR resampling, IR units.

Everything is plain PyTorch (no compiled extensions), so it runs on any device.
Parameter names follow the authors' checkpoints, which is what lets
``load_state_dict`` read them directly.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


def fir_kernel(taps: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0), gain: float = 1.0) -> torch.Tensor:
    """Separable 2-D FIR kernel, normalised to sum ``gain``."""
    k = torch.tensor(taps, dtype=torch.float32, device="cpu")  # a constant, even under a meta device
    k2 = k[:, None] * k[None, :]
    return k2 / k2.sum() * gain


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
    pad: tuple[int, int] = (0, 0), bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve each channel with ``kernel``, downsample.

    ``pad`` = (before, after), applied to both spatial axes; negative values crop.
    The kernel is flipped, i.e. this is a true convolution. ``bias`` (per channel)
    is added to the result.

    Computed without materialising the zero-inserted signal: upsampling is a
    depthwise transposed convolution with stride ``up`` (the polyphase form: each
    output phase only touches the input samples, ``up**2`` times fewer
    multiply-adds than convolving the zero-inserted signal), downsampling a
    depthwise convolution with stride ``down`` (only the kept samples are computed).
    """
    c = x.shape[1]
    kh, kw = kernel.shape
    p0, p1 = pad
    kernel = kernel.to(device=x.device, dtype=x.dtype)
    if up > 1:
        # Output n of the zero-inserted convolution is sum_i x[i] k[n + (K-1-p0) - up*i]:
        # a transposed conv with the unflipped kernel, padding K-1-p0 and an
        # output padding that makes the lengths agree.
        padding = (kh - 1 - p0, kw - 1 - p0)
        extra = p1 - p0 + up - 1
        if min(padding) >= 0 and 0 <= extra < up:
            weight = kernel.expand(c, 1, kh, kw)
            out = F.conv_transpose2d(x, weight, bias, stride=up, padding=padding, output_padding=extra, groups=c)
            return out if down == 1 else out[..., ::down, ::down]
        b, _, h, w = x.shape  # unusual pads: insert the zeros explicitly
        x = F.pad(x.reshape(b, c, h, 1, w, 1), (0, up - 1, 0, 0, 0, up - 1)).reshape(b, c, h * up, w * up)
    weight = torch.flip(kernel, (0, 1)).expand(c, 1, kh, kw)
    if p0 == p1 and p0 >= 0:
        return F.conv2d(x, weight, bias, stride=down, padding=p0, groups=c)
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    if p0 < 0 or p1 < 0:
        hh, ww = x.shape[-2:]
        x = x[..., max(-p0, 0): hh - max(-p1, 0), max(-p0, 0): ww - max(-p1, 0)]
    return F.conv2d(x, weight, bias, stride=down, groups=c)


_Forward = TypeVar("_Forward", bound=Callable)


def _split(value: object, batch: int, start: int, stop: int) -> object:
    """``value`` cut to samples ``start:stop`` where it carries the batch (tensors, lists of them)."""
    if isinstance(value, torch.Tensor):
        return value[start:stop] if value.ndim and value.shape[0] == batch else value
    if isinstance(value, (list, tuple)):
        return type(value)(_split(v, batch, start, stop) for v in value)
    return value


def _join(parts: list) -> object:
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return type(parts[0])(_join(list(group)) for group in zip(*parts))


def splits_batches(device: torch.device) -> bool:
    """Whether inference on ``device`` runs large-activation layers one sample at a time.

    True on CPUs: there one sample's activations (tens of MB at 128-1024 px)
    already make large matrix products, and batching them only multiplies the
    working set, which spills the caches and is page-faulted in afresh. GPUs
    gain from batching, and there the batch size is the user's memory budget.
    """
    return device.type == "cpu"


def micro_batched(size: int) -> Callable[[_Forward], _Forward]:
    """Decorator: at CPU inference, ``forward`` runs on chunks of at most ``size`` samples.

    For networks with large activations per sample (see :func:`splits_batches`).
    The first argument decides the batch size; arguments (and items of list
    arguments) whose first dimension equals it are split, the others passed
    whole. While autograd records the batch is passed whole (training wants
    one large batch), and on other devices too.
    """

    def decorate(forward: _Forward) -> _Forward:
        @functools.wraps(forward)
        def run(self: nn.Module, first: torch.Tensor, *args: object, **kwargs: object) -> object:
            batch = first.shape[0]
            if batch <= size or torch.is_grad_enabled() or not splits_batches(first.device):
                return forward(self, first, *args, **kwargs)
            parts = []
            for start in range(0, batch, size):
                stop = min(start + size, batch)
                chunk_args = _split((first, *args), batch, start, stop)
                chunk_kwargs = {k: _split(v, batch, start, stop) for k, v in kwargs.items()}
                parts.append(forward(self, *chunk_args, **chunk_kwargs))
            return _join(parts)

        return run  # type: ignore[return-value]

    return decorate


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


def cached(owner: nn.Module, name: str, tensors: tuple[torch.Tensor, ...], compute) -> torch.Tensor:
    """``compute()``, reused while ``tensors`` keep their storage and version.

    For weights derived at inference time (BN folded into a convolution). Not
    cached while autograd records through a tensor that requires grad, so
    training sees ordinary differentiable code.
    """
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return compute()
    key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
    store = owner.__dict__.setdefault("_derived", {})
    hit = store.get(name)
    if hit is not None and hit[0] == key:
        return hit[1]
    with torch.no_grad():
        value = compute()
    store[name] = (key, value)
    return value


def bn_is_frozen(bn: nn.Module | None) -> bool:
    """A BatchNorm that normalises with its running statistics (eval mode)."""
    return bn is not None and not bn.training and bn.running_mean is not None


def fold_bn(
    conv: nn.Module, bn: nn.Module, weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of ``bn(conv(x))`` as one convolution (BN with running statistics)."""
    weight = conv.weight if weight is None else weight
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    transposed = isinstance(conv, nn.modules.conv._ConvTransposeNd)
    shape = [1] * weight.ndim
    shape[1 if transposed else 0] = -1
    return weight * scale.view(shape), shift


def run_conv(conv: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv`` applied with another weight and bias (same geometry)."""
    if isinstance(conv, nn.modules.conv._ConvTransposeNd):
        fn = F.conv_transpose3d if weight.ndim == 5 else F.conv_transpose2d
        return fn(x, weight, bias, conv.stride, conv.padding, conv.output_padding, conv.groups, conv.dilation)
    fn = F.conv3d if weight.ndim == 5 else F.conv2d
    return fn(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _polyphase_weight(weight: torch.Tensor) -> torch.Tensor:
    """[Cin, Cout, 4, ...] transposed-conv weight -> [2**nd * Cout, Cin, 2, ...] phase kernels.

    Along one axis, output 2m + a of a stride-2, padding-1, size-4 transposed
    convolution is ``x[m-1+a] w[3-a] + x[m+a] w[1-a]``: phase ``a`` is an ordinary
    2-tap convolution with the taps ``w[3-a], w[1-a]``.
    """
    nd = weight.ndim - 2
    taps = torch.tensor([[3, 1], [2, 0]], device=weight.device)
    out = weight.transpose(0, 1)  # [Cout, Cin, 4, ...]
    for axis in range(nd):
        out = torch.stack([out.index_select(2 + 2 * axis, taps[a]) for a in range(2)], dim=0)
        out = out.movedim(0, axis) if axis else out  # phases lead, in axis order
    # out: [2, ..., 2 (nd phase axes), Cout, Cin, 2, ..., 2]
    return out.reshape(-1, *out.shape[nd + 1:])


def conv_transpose_k4s2(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    phase_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Transposed conv (kernel 4, stride 2, padding 1; 2-D or 3-D) in polyphase form.

    One ordinary convolution with kernel 2 computes all ``2**nd`` output phases
    as channels (the same multiply-adds as the transposed conv, but oneDNN's
    direct convolution instead of its much slower backward-data kernel, which
    is worst for few output channels), then the phases are interleaved into a
    channels-last result. ``phase_weight`` = ``_polyphase_weight(weight)`` if precomputed.
    """
    nd = x.ndim - 2
    cout = weight.shape[1]
    if phase_weight is None:
        phase_weight = _polyphase_weight(weight)
    phases = 2**nd
    z = (F.conv3d if nd == 3 else F.conv2d)(
        x, phase_weight.to(x.dtype), None if bias is None else bias.repeat(phases).to(x.dtype), padding=1,
    )
    b = x.shape[0]
    sizes = x.shape[2:]
    zl = z.movedim(1, -1).reshape(b, *z.shape[2:], *([2] * nd), cout)  # [B, S+1.., 2.., C]
    out = x.new_empty(b, *[v for n in sizes for v in (n, 2)], cout, dtype=z.dtype)  # [B, S0, 2, S1, 2, .., C]
    for index in range(phases):
        a = [(index >> (nd - 1 - axis)) & 1 for axis in range(nd)]
        src = zl[(slice(None),) + tuple(slice(a[i], a[i] + sizes[i]) for i in range(nd)) + tuple(a)]
        dst = out[(slice(None),) + tuple(v for i in range(nd) for v in (slice(None), a[i]))]
        dst.copy_(src)
    out = out.reshape(b, *[2 * n for n in sizes], cout)
    return out.movedim(-1, 1)


def conv_bn(owner: nn.Module, conv: nn.Module, bn: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """``bn(conv(x))``; with a frozen BN, one convolution with the BN folded in (cached)."""
    if bn is None:
        if _is_k4s2_transpose(conv) and not (torch.is_grad_enabled() and conv.weight.requires_grad):
            phase_weight = cached(owner, "phase_weight", (conv.weight,), lambda: _polyphase_weight(conv.weight))
            return conv_transpose_k4s2(x, conv.weight, conv.bias, phase_weight)
        return conv(x)
    if not bn_is_frozen(bn):
        return bn(conv(x))
    tensors = (conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var)
    if conv.bias is not None:
        tensors += (conv.bias,)
    weight, bias = cached(owner, "conv_bn", tensors, lambda: fold_bn(conv, bn))
    if _is_k4s2_transpose(conv):
        phase_weight = cached(owner, "phase_weight", tensors, lambda: _polyphase_weight(weight))
        return conv_transpose_k4s2(x, weight, bias, phase_weight)
    return run_conv(conv, x, weight, bias)


def _is_k4s2_transpose(conv: nn.Module) -> bool:
    nd = conv.weight.ndim - 2
    return (isinstance(conv, nn.modules.conv._ConvTransposeNd) and conv.kernel_size == (4,) * nd
            and conv.stride == (2,) * nd and conv.padding == (1,) * nd and conv.output_padding == (0,) * nd
            and conv.dilation == (1,) * nd and conv.groups == 1)


class BasicConv(nn.Module):
    """Convolution (2-D or 3-D, optionally transposed) without bias, then BN and LReLU(0.01).

    Without ``bn`` no BN module is built (the authors' files carry an unused one,
    which the checkpoint reader drops). In eval mode the BN is folded into the
    convolution and the activation runs in place.
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
        if self.bn is not None and not bn_is_frozen(self.bn):
            x = self.bn(self.conv(x))
            return F.leaky_relu(x, 0.01) if self.use_relu else x
        x = conv_bn(self, self.conv, self.bn, x)
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


class IRUnit(nn.Module):
    """Improved-residual bottleneck (ArcFace), optionally with squeeze-excitation (IR-SE).

    In eval mode the BN after the second conv (and in the shortcut) is folded into
    the convolution, the 1x1 max-pool shortcut is a strided view, and the gate
    and residual sum are one fused multiply-add.
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

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.shortcut_layer, nn.MaxPool2d):
            return x if self.stride == 1 else x[..., :: self.stride, :: self.stride]
        conv, bn = self.shortcut_layer
        return conv_bn(self.shortcut_layer, conv, bn, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn0, conv1, prelu, conv2, bn2 = list(self.res_layer)[:5]
        if not (bn_is_frozen(bn0) and bn_is_frozen(bn2)):
            return self.res_layer(x) + self.shortcut_layer(x)
        y = prelu(conv1(bn0(x)))
        y = conv_bn(self, conv2, bn2, y)
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
