"""Convolutions with a BatchNorm folded in, and stride-2 transposed convolutions in polyphase form.

Fast forms and their reference twins (tests/test_ops.py holds them equal):

* ``conv_bn_folded`` (one convolution with the frozen BN folded into its weight and bias)
  against ``conv_bn_ref`` (``bn(conv(x))``);
* ``conv_transpose_k4s2`` (one ordinary convolution computing the four/eight output phases)
  against ``conv_transpose_k4s2_ref`` (``F.conv_transpose2d/3d``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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


def conv_bn_ref(conv: nn.Module, bn: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """``bn(conv(x))`` as the modules compute it."""
    x = conv(x)
    return x if bn is None else bn(x)


def conv_bn_folded(
    conv: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    phase_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``conv`` with the folded ``weight``/``bias`` (from :func:`fold_bn`); kernel-4 stride-2
    transposed convs go through :func:`conv_transpose_k4s2` when ``phase_weight`` is given."""
    if phase_weight is not None:
        return conv_transpose_k4s2(x, weight, bias, phase_weight)
    return run_conv(conv, x, weight, bias)


def is_k4s2_transpose(conv: nn.Module) -> bool:
    """A transposed conv with kernel 4, stride 2, padding 1 (DIPN's upsampling convs)."""
    nd = conv.weight.ndim - 2
    return (isinstance(conv, nn.modules.conv._ConvTransposeNd) and conv.kernel_size == (4,) * nd
            and conv.stride == (2,) * nd and conv.padding == (1,) * nd and conv.output_padding == (0,) * nd
            and conv.dilation == (1,) * nd and conv.groups == 1)


def polyphase_weight(weight: torch.Tensor) -> torch.Tensor:
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


def conv_transpose_k4s2_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Transposed conv, kernel 4, stride 2, padding 1 (2-D or 3-D), as PyTorch computes it."""
    fn = F.conv_transpose3d if x.ndim == 5 else F.conv_transpose2d
    return fn(x, weight, bias, stride=2, padding=1)


def conv_transpose_k4s2(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    phase_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`conv_transpose_k4s2_ref` in polyphase form.

    One ordinary convolution with kernel 2 computes all ``2**nd`` output phases
    as channels (the same multiply-adds as the transposed conv, but oneDNN's
    direct convolution instead of its much slower backward-data kernel, which
    is worst for few output channels), then the phases are interleaved into a
    channels-last result. ``phase_weight`` = ``polyphase_weight(weight)`` if precomputed.
    """
    nd = x.ndim - 2
    cout = weight.shape[1]
    if phase_weight is None:
        phase_weight = polyphase_weight(weight)
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


def volume_stem_ref(volume: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A 3-D convolution (one input channel, kernel 3, padding 1) of a ``[B, D, H, W]`` volume."""
    return F.conv3d(volume.unsqueeze(1), weight, bias, padding=1)


def volume_stem(volume: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """:func:`volume_stem_ref` as a 2-D convolution over the depth planes.

    A one-channel 3-D convolution is a 2-D convolution over the D planes with the
    three depth neighbours as input channels: the planes become the batch
    (``[B*D, 3, H, W]``, channels-last), which oneDNN runs as an ordinary 2-D
    convolution, and the result is already a channels-last 3-D volume
    ``[B, C, D, H, W]`` (the generic 3-D path for one input channel is a slow
    reference kernel).
    """
    b, d, h, w = volume.shape
    padded = F.pad(volume, (0, 0, 0, 0, 1, 1))  # zero planes before and after along depth
    planes = torch.stack([padded[:, k: k + d] for k in range(3)], dim=-1)  # [B, D, H, W, 3]
    planes = planes.reshape(b * d, h, w, 3).permute(0, 3, 1, 2)  # [B*D, 3, H, W] channels-last
    out = F.conv2d(planes, weight[:, 0], bias, padding=1)  # [B*D, C, H, W] channels-last
    return out.permute(0, 2, 3, 1).reshape(b, d, h, w, -1).permute(0, 4, 1, 2, 3)  # [B, C, D, H, W]
