"""StyleGAN2's modulated convolution: the fast formulations and the authors' reference.

``modulated_conv2d_ref`` is the authors' computation: modulate (and demodulate) the weight per
sample and run one grouped convolution over the batch (the upsampling conv: a grouped transposed
convolution, then the blur). ``modulated_conv2d`` computes ``gain * ref + bias`` in one of two
equivalent formulations:

* per sample (``per_sample=True``): style, demodulation and gain folded into each sample's
  weight, one plain convolution per sample; touches nothing extra at full resolution;
* batched: the style scales the *activations*, one convolution with the shared weight serves
  the whole batch, and demodulation is a per-sample, per-channel factor on the output.

:func:`prefers_per_sample` says which is cheaper for a layer under an :class:`Execution`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .execution import Execution
from .upfirdn2d import upfirdn2d, upfirdn2d_ref

BLUR_PAD = (1, 1)  # the blur after the stride-2 transposed conv (3x3 kernel, 4-tap FIR)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a convolution on ``x`` runs in here (autocast's, where it is on)."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def fp32_region(x: torch.Tensor) -> torch.autocast:
    """A region where autocast is off: styles, demodulation and the RGB skip stay in fp32."""
    return torch.autocast(x.device.type, enabled=False)


def demodulation_energy(weight: torch.Tensor) -> torch.Tensor:
    """Sum of squares of a [out, in, k, k] weight over the kernel: [out, in]."""
    return weight.pow(2).sum(dim=(2, 3))


def prefers_per_sample(x: torch.Tensor, weight: torch.Tensor, execution: Execution) -> bool:
    """Per-sample weights pay where a weight is smaller than one sample's input (from the 64x64
    blocks up, and the 1x1 to-RGB convs), for one sample or when batches are split anyway."""
    return (execution.per_sample_modulation and weight.numel() <= x[0].numel()
            and (x.shape[0] == 1 or execution.split_batches))


def _conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int,
    blur: torch.Tensor | None,
) -> torch.Tensor:
    if blur is not None:  # upsampling: weight [out, in, k, k] -> transposed conv weight [in, out, k, k]
        x = F.conv_transpose2d(x, weight.transpose(0, 1).to(x.dtype), stride=2)
        return upfirdn2d(x, blur, pad=BLUR_PAD, bias=None if bias is None else bias.to(x.dtype))
    return F.conv2d(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype), padding=padding)


def modulated_conv2d(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True,
    padding: int = 0, blur: torch.Tensor | None = None, bias: torch.Tensor | None = None,
    gain: float = 1.0, per_sample: bool = False, energy: torch.Tensor | None = None,
    cast_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """``gain * modulated_conv2d_ref(...) + bias``, fast.

    ``weight`` [out, in, k, k]; ``styles`` [B, in] (the affine's output, fp32); ``blur`` the FIR
    kernel of an upsampling conv (None: no upsampling). ``energy`` (:func:`demodulation_energy`)
    and ``cast_weight`` (``weight`` in the compute dtype) may be precomputed for frozen weights.
    """
    batch = x.shape[0]
    dtype = compute_dtype(x)
    scale = 1.0 / math.sqrt(weight[0].numel())
    with fp32_region(x):
        styles = styles.float()
        if demodulate:
            energy = demodulation_energy(weight) if energy is None else energy
            demod = torch.rsqrt(styles.pow(2) @ energy.t() * scale**2 + 1e-8)  # [B, out]
        else:
            demod = styles.new_ones(batch, weight.shape[0])
        if per_sample:
            coef = demod[:, :, None] * styles[:, None, :] * (scale * gain)  # [B, out, in]
            weights = weight[None] * coef[:, :, :, None, None]
        else:
            x = x * (styles * (scale * gain))[:, :, None, None].to(x.dtype)
            if dtype != weight.dtype:
                weight = cast_weight if cast_weight is not None and cast_weight.dtype == dtype else weight.to(dtype)
    if per_sample:
        outs = [_conv(x[b: b + 1], weights[b], bias, padding, blur) for b in range(batch)]
        return outs[0] if batch == 1 else torch.cat(outs)
    out = _conv(x, weight, None, padding, blur)
    out = out.mul_(demod[:, :, None, None].to(out.dtype))
    if bias is not None:
        out = out.add_(bias.view(1, -1, 1, 1).to(out.dtype))
    return out


def modulated_conv2d_ref(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True,
    padding: int = 0, blur: torch.Tensor | None = None,
) -> torch.Tensor:
    """The authors' modulated convolution: per-sample weights, one grouped convolution."""
    batch, in_ch, height, width = x.shape
    out_ch, _, k, _ = weight.shape
    w = weight[None] * styles.view(batch, 1, in_ch, 1, 1) / math.sqrt(in_ch * k * k)
    if demodulate:
        w = w * torch.rsqrt(w.pow(2).sum(dim=(2, 3, 4)) + 1e-8).view(batch, out_ch, 1, 1, 1)
    x = x.reshape(1, batch * in_ch, height, width)
    if blur is not None:
        w = w.transpose(1, 2).reshape(batch * in_ch, out_ch, k, k)
        out = F.conv_transpose2d(x, w.to(x.dtype), stride=2, groups=batch)
        out = out.view(batch, out_ch, *out.shape[2:])
        return upfirdn2d_ref(out, blur, pad=BLUR_PAD)
    out = F.conv2d(x, w.reshape(batch * out_ch, in_ch, k, k).to(x.dtype), padding=padding, groups=batch)
    return out.view(batch, out_ch, *out.shape[2:])


def add_noise_leaky_relu_(
    x: torch.Tensor, noise: torch.Tensor, strength: torch.Tensor, clamp: float | None = None,
) -> torch.Tensor:
    """In place: ``leaky_relu(x + strength * noise, 0.2)``, then clipped to +-``clamp`` if given;
    with the bias and the gain sqrt(2) folded into the convolution (leaky ReLU is positively
    homogeneous) this is the styled conv's epilogue, :func:`styled_activation_ref`, in one pass
    over the output instead of five."""
    x = x.add_((noise * strength).to(x.dtype))
    x = F.leaky_relu_(x, 0.2)
    return x if clamp is None else clamp_(x, clamp)


def clamp_(x: torch.Tensor, clamp: float) -> torch.Tensor:
    """``x`` clipped to +-``clamp``: in place, except where autograd needs ``x`` unchanged."""
    return torch.clamp(x, -clamp, clamp) if x.requires_grad else x.clamp_(-clamp, clamp)


def styled_activation_ref(
    x: torch.Tensor, noise: torch.Tensor, noise_weight: torch.Tensor, bias: torch.Tensor,
    clamp: float | None = None,
) -> torch.Tensor:
    """The authors' epilogue of a styled conv: noise, bias, leaky ReLU 0.2, gain sqrt(2), and
    NVIDIA's ``conv_clamp`` (clip to +-clamp after the gain) if given."""
    x = x + noise_weight * noise
    x = F.leaky_relu(x + bias.view(1, -1, 1, 1), 0.2) * math.sqrt(2.0)
    return x if clamp is None else torch.clamp(x, -clamp, clamp)
