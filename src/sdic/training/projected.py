"""The projected discriminator (Sauer et al., "Projected GANs Converge Faster", NeurIPS 2021).

The discriminator judges images in the feature space of a frozen ImageNet network instead of
learning features from scratch, which is why it reaches a given FID from far fewer images:

1. the image (in [-1, 1]) is resized to ``input_size`` and goes through the frozen
   EfficientNet-Lite0 (:mod:`.efficientnet`); the outputs of stages 1, 2, 4 and 6 (strides 4,
   8, 16, 32; 24, 40, 112 and 320 channels) are the four feature scales;
2. **cross-channel mixing** (CCM): a random 1x1 convolution per scale to ``channels * 2**i``
   channels (i = 0..3);
3. **cross-scale mixing** (CSM): top-down, each scale adds the upsampled (x2, bilinear) and
   1x1-projected mix of the scale below it, then a random 3x3 convolution;
4. one small discriminator per scale: 4x4 stride-2 convolutions (spectral norm, BatchNorm,
   LeakyReLU 0.2) down to 8x8 (none when the scale is smaller), then a 4x4 convolution to a
   map of logits.

The projections (2, 3) are random (Kaiming-uniform, seeded) and **fixed**, as in the paper:
only the per-scale discriminators train. The logits of all scales are flattened and
concatenated, ``[B, N]``; the losses are the hinge losses of the paper (:func:`d_hinge_loss`,
:func:`g_hinge_loss`) averaged over that concatenation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .efficientnet import EfficientNetLite0, load_efficientnet_lite0

__all__ = ["ProjectedDiscriminator", "FeatureProjector", "d_hinge_loss", "g_hinge_loss"]

# (stage index, channels, stride) of the EfficientNet-Lite0 outputs used as the four scales
TAPS = ((1, 24, 4), (2, 40, 8), (4, 112, 16), (6, 320, 32))


def d_hinge_loss(real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real_pred).mean() + F.relu(1 + fake_pred).mean()


def g_hinge_loss(fake_pred: torch.Tensor) -> torch.Tensor:
    return -fake_pred.mean()


class FeatureProjector(nn.Module):
    """Frozen backbone + fixed random CCM/CSM projections: an image to four mixed feature maps."""

    def __init__(self, input_size: int, channels: int = 64, seed: int = 0,
                 backbone: EfficientNetLite0 | None = None) -> None:
        super().__init__()
        self.input_size = input_size
        self.backbone = backbone if backbone is not None else load_efficientnet_lite0()
        self.out_channels = tuple(channels * 2 ** i for i in range(len(TAPS)))
        self.resolutions = tuple(max(1, -(-input_size // stride)) for _, _, stride in TAPS)
        g = torch.Generator().manual_seed(seed)
        self.ccm = nn.ModuleList(_random_conv(c, o, 1, g) for (_, c, _), o in zip(TAPS, self.out_channels))
        self.csm_skip = nn.ModuleList(_random_conv(self.out_channels[i + 1], self.out_channels[i], 1, g)
                                      for i in range(len(TAPS) - 1))
        self.csm = nn.ModuleList(_random_conv(o, o, 3, g) for o in self.out_channels)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureProjector:  # frozen: BatchNorm keeps ImageNet statistics
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        stages = self.backbone.stage_outputs(x, last_stage=TAPS[-1][0])
        mixed = [ccm(stages[stage]) for ccm, (stage, _, _) in zip(self.ccm, TAPS)]
        out = [None] * len(mixed)
        below = None
        for i in range(len(mixed) - 1, -1, -1):
            level = mixed[i]
            if below is not None:
                up = F.interpolate(below, size=level.shape[-2:], mode="bilinear", align_corners=False)
                level = level + self.csm_skip[i](up)
            out[i] = below = self.csm[i](level)
        return out


def _random_conv(in_channels: int, out_channels: int, kernel: int, generator: torch.Generator) -> nn.Conv2d:
    """A conv with seeded Kaiming-uniform weights (PyTorch's default scheme, reproducible)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=True)
    bound = 1.0 / (in_channels * kernel * kernel) ** 0.5
    with torch.no_grad():
        conv.weight.uniform_(-bound, bound, generator=generator)
        conv.bias.uniform_(-bound, bound, generator=generator)
    return conv


class ScaleDiscriminator(nn.Sequential):
    """Strided 4x4 blocks from ``resolution`` down to 8x8, then a 4x4 conv to logits."""

    def __init__(self, in_channels: int, resolution: int, width: int) -> None:
        layers: list[nn.Module] = []
        channels = in_channels
        while resolution > 8:
            layers += [spectral_norm(nn.Conv2d(channels, width, 4, stride=2, padding=1, bias=False)),
                       nn.BatchNorm2d(width), nn.LeakyReLU(0.2)]
            channels, resolution = width, resolution // 2
        # a 4x4 kernel gives a 5x5 map at 8x8; smaller maps are padded so one logit remains
        pad = 0 if resolution >= 4 else (4 - resolution + 1) // 2
        layers.append(spectral_norm(nn.Conv2d(channels, 1, 4, stride=1, padding=pad)))
        super().__init__(*layers)


class ProjectedDiscriminator(nn.Module):
    """Multi-scale discriminators on projected pretrained features; logits ``[B, N]``."""

    def __init__(self, input_size: int, channels: int = 64, width: int = 128, seed: int = 0,
                 backbone: EfficientNetLite0 | None = None) -> None:
        super().__init__()
        self.features = FeatureProjector(input_size, channels, seed, backbone)
        self.discriminators = nn.ModuleList(
            ScaleDiscriminator(c, r, width) for c, r in zip(self.features.out_channels, self.features.resolutions))

    def requires_grad_(self, requires_grad: bool = True) -> ProjectedDiscriminator:
        """Switch the per-scale discriminators only: the projector stays frozen."""
        self.discriminators.requires_grad_(requires_grad)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        return torch.cat([d(f).flatten(1) for d, f in zip(self.discriminators, features)], dim=1)
