"""DICN: the discrepancy information compensation network (the authors' ``SAF`` module).

The discrepancy map is injected twice: as a gated residual on the generator's
tap feature ``G7`` (spatial compensation) and, through ``Affine1d``, as an
affine shift of the W+ code (contextual compensation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import SDICConfig
from ..ops import UsesExecution, micro_batched
from .layers import BasicConv, EqualConv2d, scaled_leaky_relu


class _ScaledLeakyReLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_leaky_relu(x)


def _conv1d_block(channels_in: int, channels_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(channels_in, channels_out, kernel, padding=kernel // 2),
        nn.BatchNorm1d(channels_out),
        nn.LeakyReLU(0.01),
    )


class Affine1d(nn.Module):
    """W' = att(s) * W + W + att2(s), with s = sen(shift); convs run along the style axis."""

    def __init__(self, n_latent: int, tokens: int) -> None:
        super().__init__()
        self.sen = nn.Sequential(*_conv1d_block(tokens, tokens // 2, 1), nn.Conv1d(tokens // 2, n_latent, 1))
        self.att = nn.Sequential(*_conv1d_block(n_latent, n_latent, 3), nn.Conv1d(n_latent, n_latent, 1, bias=False))
        self.att2 = nn.Sequential(*_conv1d_block(n_latent, n_latent, 3), nn.Conv1d(n_latent, n_latent, 1, bias=False))

    def forward(self, w: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        s = self.sen(shift)
        return self.att(s) * w + w + self.att2(s)


class DICN(UsesExecution, nn.Module):
    """Compensates the tap feature and the W+ code with the discrepancy map.

    With ``execution.split_batches`` the samples go through one at a time
    (full-resolution activations, as in DIPN).
    """

    def __init__(self, config: SDICConfig) -> None:
        super().__init__()
        dc = config.dicn
        tap_ch = config.tap_channels
        self.tap_resolution = config.tap_resolution
        self.style_dim = config.generator.style_dim
        self.conv_layer1 = nn.Sequential(
            nn.Conv2d(3, dc.stem_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(dc.stem_channels),
            nn.PReLU(dc.stem_channels),
        )
        layers: list[nn.Module] = []
        channels = dc.stem_channels
        for stage in range(config.dicn_downsamplings):
            out = tap_ch if stage == config.dicn_downsamplings - 1 else dc.semantic_channels
            layers += [BasicConv(channels, out, kernel_size=3, stride=2, padding=1),
                       nn.Conv2d(out, out, 3, 1, 1, bias=False)]
            channels = out
        self.semantic = nn.Sequential(*layers)
        self.att = nn.Sequential(
            BasicConv(tap_ch, tap_ch, kernel_size=3, stride=1, padding=1),
            nn.Conv2d(tap_ch, tap_ch, 3, 1, 1, bias=False),
        )
        self.condition_shift3 = nn.Sequential(
            EqualConv2d(3, dc.shift_channels, 3, padding=1),
            _ScaledLeakyReLU(),
            EqualConv2d(dc.shift_channels, dc.shift_channels, 3, padding=1),
        )
        self.aff1d = Affine1d(config.n_latent, config.shift_tokens)

    def compensate_feature(self, discrepancy: torch.Tensor, tap: torch.Tensor) -> torch.Tensor:
        """F = sigmoid(att(f + G7)) * f + G7 with f the discrepancy's semantic feature."""
        f = self.semantic(self.conv_layer1(discrepancy))
        return torch.sigmoid(self.att(f + tap)) * f + tap

    def compensate_latent(self, discrepancy: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """W' from the discrepancy map resized to the tap and read as latent tokens."""
        shift = self.condition_shift3(discrepancy)
        shift = F.interpolate(shift, size=(self.tap_resolution,) * 2, mode="bilinear", align_corners=False)
        shift = shift.reshape(shift.shape[0], -1, self.style_dim)
        return self.aff1d(w, shift)

    @micro_batched(1)
    def forward(
        self, discrepancy: torch.Tensor, tap: torch.Tensor, w: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.compensate_feature(discrepancy, tap), self.compensate_latent(discrepancy, w)
