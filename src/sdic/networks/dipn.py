"""DIPN: the discrepancy information prediction network (the authors' ``DIP`` module).

Two feature pyramids (photo and initial reconstruction) give per-pixel
descriptors; stacked along a depth axis they form a 3-D volume that an
hourglass refines, fusing context from the photo's pyramid at every scale
(context-geometry fusion). A small head turns the volume into the
3-channel discrepancy map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..config import DIPNConfig
from ..ops import UsesExecution, micro_batched
from .layers import BasicConv, IRUnit


def _conv(cin: int, cout: int, stride: int = 1) -> BasicConv:
    return BasicConv(cin, cout, kernel_size=3, stride=stride, padding=1)


def _conv3d(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> BasicConv:
    return BasicConv(cin, cout, is_3d=True, kernel_size=kernel, stride=stride, padding=kernel // 2)


def _deconv3d(cin: int, cout: int, bn: bool = True, relu: bool = True) -> BasicConv:
    return BasicConv(cin, cout, deconv=True, is_3d=True, bn=bn, relu=relu,
                     kernel_size=4, stride=2, padding=1)


def _volume_stem(stem: BasicConv, volume: torch.Tensor) -> torch.Tensor:
    """``stem`` (a 3-D BasicConv from 1 channel, kernel 3, padding 1) on a ``[B, D, H, W]`` volume;
    with folded weights through ``ops.volume_stem`` (a 2-D convolution over the depth planes)."""
    folded = stem.folded()
    if folded is None:
        return stem(volume.unsqueeze(1))
    out = ops.volume_stem(volume, *folded)
    return F.leaky_relu_(out, 0.01) if stem.use_relu else out


class FeaturePyramid(nn.Module):
    """Five convs giving features at 1, 1/2, 1/4 and 1/8 of the input size."""

    def __init__(self, channels: tuple[int, int, int, int, int]) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = channels
        self.fe1 = _conv(3, c1)
        self.fe2 = _conv(c1, c2, 2)
        self.fe3 = _conv(c2, c3)
        self.fe4 = _conv(c3, c4, 2)
        self.fe5 = _conv(c4, c5, 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.fe1(x)
        f2 = self.fe3(self.fe2(f1))
        f4 = self.fe4(f2)
        f8 = self.fe5(f4)
        return [f1, f2, f4, f8]


class Conv2x(nn.Module):
    """Transposed conv up by 2, concatenate the skip feature, 3x3 conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = BasicConv(in_channels, out_channels, deconv=True, kernel_size=4, stride=2, padding=1)
        self.conv2 = _conv(2 * out_channels, 2 * out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        if x.shape[-2:] != skip.shape[-2:]:
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.conv2(torch.cat((x, skip), dim=1))


class FeatureUp(nn.Module):
    """Top-down path over a pyramid; returns [full, 1/2, 1/4, 1/8] features."""

    def __init__(self, channels: tuple[int, int, int, int, int]) -> None:
        super().__init__()
        c1, _, c3, c4, c5 = channels
        self.deconv8_4 = Conv2x(c5, c4)
        self.deconv4_2 = Conv2x(2 * c4, c3)
        self.deconv2_1 = Conv2x(2 * c3, c1)
        self.conv4 = _conv(2 * c1, 2 * c1)

    def forward(self, pyramid: list[torch.Tensor]) -> list[torch.Tensor]:
        f1, f2, f4, f8 = pyramid
        u4 = self.deconv8_4(f8, f4)
        u2 = self.deconv4_2(u4, f2)
        u1 = self.deconv2_1(u2, f1)
        return [self.conv4(u1), u2, u4, f8]


class ContextGeometryFusion(nn.Module):
    """Gate a cost volume with image context broadcast along its depth axis."""

    def __init__(self, volume_channels: int, image_channels: int) -> None:
        super().__init__()
        self.semantic = nn.Sequential(
            BasicConv(image_channels, image_channels // 2, kernel_size=1, stride=1, padding=0),
            nn.Conv2d(image_channels // 2, volume_channels, 1),
        )
        plane = dict(is_3d=True, kernel_size=(1, 5, 5), stride=1, padding=(0, 2, 2))
        self.att = nn.Sequential(
            BasicConv(volume_channels, volume_channels, **plane),
            nn.Conv3d(volume_channels, volume_channels, 1, bias=False),
        )
        self.agg = BasicConv(volume_channels, volume_channels, **plane)

    def forward(self, volume: torch.Tensor, image_feature: torch.Tensor) -> torch.Tensor:
        context = self.semantic(image_feature).unsqueeze(2)
        gate = self.att(context + volume)
        return self.agg(torch.sigmoid(gate) * context + volume)


class HourglassFusion(nn.Module):
    """3-D hourglass over the descriptor volume with fusion at 1/8, 1/4 and 1/2 scale."""

    def __init__(self, config: DIPNConfig) -> None:
        super().__init__()
        h1, h2, h3 = config.hourglass_channels
        c1, _, c3, c4, c5 = config.feature_channels
        stem = config.stem_channels
        self.conv1 = nn.Sequential(_conv3d(stem, h1, stride=2), _conv3d(h1, h1))
        self.conv2 = nn.Sequential(_conv3d(h1, h2, stride=2), _conv3d(h2, h2))
        self.conv3 = nn.Sequential(_conv3d(h2, h3, stride=2), _conv3d(h3, h3))
        self.conv3_up = _deconv3d(h3, h2)
        self.conv2_up = _deconv3d(h2, h1)
        self.conv1_up = _deconv3d(h1, 1, bn=False, relu=False)
        self.agg_0 = nn.Sequential(_conv3d(2 * h2, h2, kernel=1), _conv3d(h2, h2), _conv3d(h2, h2))
        self.agg_1 = nn.Sequential(_conv3d(2 * h1, h1, kernel=1), _conv3d(h1, h1), _conv3d(h1, h1))
        self.CGF_32 = ContextGeometryFusion(h3, c5)
        self.CGF_16 = ContextGeometryFusion(h2, 2 * c4)
        self.CGF_8 = ContextGeometryFusion(h1, 2 * c3)

    def forward(self, volume: torch.Tensor, image_levels: list[torch.Tensor]) -> torch.Tensor:
        conv1 = self.conv1(volume)
        conv2 = self.conv2(conv1)
        conv3 = self.CGF_32(self.conv3(conv2), image_levels[3])
        conv2 = self.agg_0(torch.cat((self.conv3_up(conv3), conv2), dim=1))
        conv2 = self.CGF_16(conv2, image_levels[2])
        conv1 = self.agg_1(torch.cat((self.conv2_up(conv2), conv1), dim=1))
        conv1 = self.CGF_8(conv1, image_levels[1])
        return self.conv1_up(conv1)


class DIPN(UsesExecution, nn.Module):
    """Predicts the discrepancy map between a photo and its initial reconstruction.

    Both inputs are [B, 3, S, S] in [-1, 1] at the encoder's input size S. With
    ``execution.split_batches`` the samples go through one at a time: the descriptor
    volumes are tens of MB per sample at S = 256, so batching them only adds memory traffic.
    """

    def __init__(self, config: DIPNConfig) -> None:
        super().__init__()
        c1 = config.feature_channels[0]
        self.feature1 = FeaturePyramid(config.feature_channels)
        self.feature2 = FeaturePyramid(config.feature_channels)
        self.feature_up = FeatureUp(config.feature_channels)
        self.conv = _conv(2 * c1, config.level0_channels)
        self.desc = nn.Conv2d(config.level0_channels, config.descriptor_channels, 1)
        self.corr_stem = _conv3d(1, config.stem_channels)
        self.hourglass_fusion = HourglassFusion(config)
        head = config.head_channels
        self.rgb1 = nn.Sequential(
            _conv(config.volume_depth, head),
            nn.Conv2d(head, head, 3, 1, 1, bias=False),
            nn.BatchNorm2d(head),
            nn.ReLU(),
        )
        self.rgb = nn.Sequential(IRUnit(head, 3, 1, se=False), IRUnit(3, 3, 1, se=False),
                                 IRUnit(3, 3, 1, se=False))

    @micro_batched(1)
    def forward(self, image: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        image = image.contiguous(memory_format=torch.channels_last)
        reconstruction = reconstruction.contiguous(memory_format=torch.channels_last)
        photo_levels = self.feature_up(self.feature1(image))
        recon_levels = self.feature_up(self.feature2(reconstruction))
        descriptors = [self.desc(self.conv(levels[0])) for levels in (photo_levels, recon_levels)]
        volume = _volume_stem(self.corr_stem, torch.cat(descriptors, dim=1))
        volume = self.hourglass_fusion(volume, photo_levels)
        return self.rgb(self.rgb1(volume.squeeze(1)))
