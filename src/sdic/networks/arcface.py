"""ArcFace IR-SE-50 face-recognition backbone (the identity network of the ID loss and metric)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ir_body, ir_input_layer

IR_SE50_UNITS = (3, 4, 14, 3)
IR_SE50_CHANNELS = (64, 128, 256, 512)


class ArcFaceIRSE50(nn.Module):
    """Maps 112x112 aligned faces in [-1, 1] to unit-norm 512-d embeddings."""

    input_size = 112

    def __init__(self, embedding_dim: int = 512, dropout: float = 0.6) -> None:
        super().__init__()
        self.input_layer = ir_input_layer(64)
        self.body = ir_body(IR_SE50_UNITS, IR_SE50_CHANNELS, 64)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(512 * 7 * 7, embedding_dim),
            nn.BatchNorm1d(embedding_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.output_layer(self.body(self.input_layer(x)))
        return F.normalize(x, dim=1)

    def embed_ffhq256(self, images: torch.Tensor) -> torch.Tensor:
        """Embed FFHQ-aligned 256x256 faces: crop rows 35:223, cols 32:220, pool to 112."""
        if images.shape[-2:] != (256, 256):
            images = F.adaptive_avg_pool2d(images, (256, 256))
        crop = images[:, :, 35:223, 32:220]
        return self(F.adaptive_avg_pool2d(crop, (self.input_size, self.input_size)))
