"""FIR resampling: upsample by zero insertion, pad, convolve with a 2-D kernel, downsample.

``upfirdn2d`` is the fast form (polyphase transposed convolution for upsampling, strided
convolution for downsampling); ``upfirdn2d_ref`` computes the definition literally. They agree
to float round-off (tests/test_ops.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fir_kernel(taps: tuple[float, ...] = (1.0, 3.0, 3.0, 1.0), gain: float = 1.0) -> torch.Tensor:
    """Separable 2-D FIR kernel, normalised to sum ``gain``."""
    k = torch.tensor(taps, dtype=torch.float32, device="cpu")  # a constant, even under a meta device
    k2 = k[:, None] * k[None, :]
    return k2 / k2.sum() * gain


def upfirdn2d_ref(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
    pad: tuple[int, int] = (0, 0), bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """The definition: insert ``up - 1`` zeros after every sample, pad (negative: crop) both
    spatial axes by ``pad`` = (before, after), convolve every channel with the flipped
    ``kernel`` (a true convolution), keep every ``down``-th sample, add ``bias`` per channel."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h, 1, w, 1)
    x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1)).reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    x = x[..., max(-p0, 0): x.shape[-2] - max(-p1, 0), max(-p0, 0): x.shape[-1] - max(-p1, 0)]
    weight = torch.flip(kernel, (0, 1)).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    out = F.conv2d(x, weight, groups=c)[..., ::down, ::down]
    return out if bias is None else out + bias.view(1, -1, 1, 1).to(out.dtype)


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
    pad: tuple[int, int] = (0, 0), bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`upfirdn2d_ref` without materialising the zero-inserted signal.

    Upsampling is a depthwise transposed convolution with stride ``up`` (the polyphase form:
    each output phase only touches the input samples, ``up**2`` times fewer multiply-adds than
    convolving the zero-inserted signal), downsampling a depthwise convolution with stride
    ``down`` (only the kept samples are computed).
    """
    c = x.shape[1]
    kh, kw = kernel.shape
    p0, p1 = pad
    kernel = kernel.to(device=x.device, dtype=x.dtype)
    bias = None if bias is None else bias.to(x.dtype)
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
