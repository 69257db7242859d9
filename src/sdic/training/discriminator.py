"""Training-only networks: the StyleGAN2 ResNet discriminator and e4e's latent-code discriminator.

StyleGAN2 discriminator (Karras et al. 2020, config F), in the module layout of
rosinality's implementation (so its ``d`` weights use the same names):

* ``convs.0``: 1x1 conv from RGB (equalised, bias + scaled leaky ReLU);
* ``convs.1..``: residual blocks, one per resolution from ``size`` down to 8:
  ``conv1`` 3x3, ``conv2`` = FIR blur ([1,3,3,1], pads chosen so the stride-2
  conv halves the size) then a 3x3 stride-2 conv, ``skip`` = blur and 1x1
  stride-2 conv without bias or activation; output ``(main + skip) / sqrt(2)``;
* minibatch standard deviation (groups of ``stddev_group``, one feature);
* ``final_conv`` 3x3 at 4x4, ``final_linear`` = equalised linear (activated) and
  a linear to one logit.

Channel widths follow the generator's configuration (``GeneratorConfig.channels``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import GeneratorConfig
from ..networks.layers import EqualConv2d, EqualLinear, FusedLeakyReLU, fir_kernel, upfirdn2d


class Blur(nn.Module):
    """FIR low-pass ([1,3,3,1] outer product, sum 1) with explicit padding."""

    def __init__(self, pad: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("kernel", fir_kernel())
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class ConvLayer(nn.Sequential):
    """[blur] -> equalised conv -> [bias + scaled leaky ReLU]."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, downsample: bool = False,
                 bias: bool = True, activate: bool = True) -> None:
        layers: list[nn.Module] = []
        if downsample:
            p = (4 - 2) + (kernel_size - 1)  # FIR taps - factor + conv taps - 1
            layers.append(Blur(((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channels))
        super().__init__(*layers)


class ResBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True)
        self.skip = ConvLayer(in_channels, out_channels, 1, downsample=True, bias=False, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


def minibatch_stddev(x: torch.Tensor, group_size: int, features: int = 1) -> torch.Tensor:
    """Append the per-group standard deviation (averaged over channels and pixels) as features.

    Groups are formed as in StyleGAN2/rosinality: sample i belongs to group i mod (B/G).
    """
    b, c, h, w = x.shape
    group = min(b, group_size)
    if b % group:
        raise ValueError(f"batch {b} is not divisible by the stddev group {group}")
    y = x.view(group, -1, features, c // features, h, w)
    y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)
    y = y.mean(dim=(2, 3, 4), keepdim=True).squeeze(2)  # [B/G, features, 1, 1]
    y = y.repeat(group, 1, h, w)
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """StyleGAN2 ResNet discriminator for ``config.size`` images; returns one logit per image."""

    def __init__(self, config: GeneratorConfig, stddev_group: int = 4, channel_multiplier: int = 0) -> None:
        super().__init__()
        if channel_multiplier:
            from dataclasses import replace

            config = replace(config, channel_multiplier=channel_multiplier)
        ch = config.channels
        convs: list[nn.Module] = [ConvLayer(3, ch(config.size), 1)]
        in_ch = ch(config.size)
        for log_res in range(config.log_size, 2, -1):
            out_ch = ch(2 ** (log_res - 1))
            convs.append(ResBlock(in_ch, out_ch))
            in_ch = out_ch
        self.convs = nn.Sequential(*convs)
        self.stddev_group = stddev_group
        self.final_conv = ConvLayer(in_ch + 1, ch(4), 3)
        self.final_linear = nn.Sequential(
            EqualLinear(ch(4) * 4 * 4, ch(4), activation=True),
            EqualLinear(ch(4), 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs(x)
        out = minibatch_stddev(out, self.stddev_group)
        out = self.final_conv(out)
        return self.final_linear(out.flatten(1))


class LatentDiscriminator(nn.Module):
    """e4e's latent-code discriminator: an MLP (``layers`` linears, LReLU 0.2) on one W code."""

    def __init__(self, style_dim: int, layers: int = 4) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        for _ in range(layers - 1):
            modules += [nn.Linear(style_dim, style_dim), nn.LeakyReLU(0.2)]
        modules.append(nn.Linear(style_dim, 1))
        self.net = nn.Sequential(*modules)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.net(w)
