"""e4e encoder: IR-SE body, feature pyramid and one style head per W+ entry."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import EncoderConfig
from ..errors import InputError
from .layers import EqualLinear, ir_body, ir_input_layer


class GradualStyleBlock(nn.Module):
    """Stride-2 convs down to 1x1, then an equalised linear: one W+ delta."""

    def __init__(self, channels: int, spatial: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(channels, channels, 3, 2, 1), nn.LeakyReLU(0.01)]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(channels, channels, lr_mul=1.0)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            x = self.convs(x)
        else:
            for layer in self.convs:
                x = F.leaky_relu_(x, layer.negative_slope) if isinstance(layer, nn.LeakyReLU) else layer(x)
        return self.linear(x.reshape(-1, self.channels))


def _upsample_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class Encoder4Editing(nn.Module):
    """Maps a ``input_size`` image in [-1, 1] to W+ offsets [B, n_latent, style_dim].

    Entry 0 comes from the coarsest feature and is copied to every entry; the
    other entries add their own delta (``progressive_stage`` limits how many,
    for e4e's progressive training; inference uses all).
    """

    def __init__(self, config: EncoderConfig, n_latent: int, style_dim: int) -> None:
        super().__init__()
        if config.stage_channels[-1] != style_dim:
            raise InputError("the last encoder stage must have style_dim channels")
        self.config = config
        self.n_latent = n_latent
        self.input_layer = ir_input_layer(config.stage_channels[0])
        self.body = ir_body(config.stage_units, config.stage_channels, config.stage_channels[0])
        self.styles = nn.ModuleList(
            GradualStyleBlock(style_dim, config.style_spatial(i)) for i in range(n_latent)
        )
        self.latlayer1 = nn.Conv2d(config.stage_channels[2], style_dim, 1)
        self.latlayer2 = nn.Conv2d(config.stage_channels[1], style_dim, 1)
        self.progressive_stage = n_latent

    def pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Body features c1 (1/4), c2 (1/8), c3 (1/16 of the input size)."""
        t1, t2, t3 = self.config.tap_units
        x = self.input_layer(x)
        taps = {}
        for index, unit in enumerate(self.body):
            x = unit(x)
            if index in (t1, t2, t3):
                taps[index] = x
        return taps[t1], taps[t2], taps[t3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1, c2, c3 = self.pyramid(x)
        w0 = self.styles[0](c3)
        deltas = [w0.new_zeros(w0.shape)]
        features = c3
        p2 = c3
        for i in range(1, min(self.progressive_stage + 1, self.n_latent)):
            if i == self.config.coarse_index:
                p2 = features = _upsample_add(c3, self.latlayer1(c2))
            elif i == self.config.middle_index:
                features = _upsample_add(p2, self.latlayer2(c1))
            deltas.append(self.styles[i](features))
        deltas += [w0.new_zeros(w0.shape)] * (self.n_latent - len(deltas))
        return w0[:, None, :] + torch.stack(deltas, dim=1)
