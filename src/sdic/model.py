"""The SDIC pipeline: e4e inversion, discrepancy prediction, compensation, editing.

``SDICModel.invert`` and ``SDICModel.edit`` implement ARCHITECTURE.md §6:

    codes = e4e(x) + latent_avg
    R0, G7 = G(codes)
    D = DIPN(x, resize(clamp(R0)))
    F, W' = DICN(D, G7, codes)
    out = G(W', tap := F)

and for an edit W_e = edit(W'):  out = G(W_e, tap := F - G7 + tap(G(W_e))).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from . import editing, images
from .config import SDICConfig
from .networks import DICN, DIPN, Encoder4Editing, Generator
from .ops import TRAINING, Execution, set_execution

ImageInput = torch.Tensor | Image.Image | str | Path | list

PRECISIONS = ("fp32", "bf16")


def _check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype ``precision`` computes convolutions in under autocast (None: fp32, no autocast)."""
    return {"bf16": torch.bfloat16}.get(_check_precision(precision))


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``bf16``: autocast to bfloat16 on the model's device type (CPU or GPU); ``fp32``: nothing."""
    if _check_precision(precision) == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass
class Inversion:
    """Result of :meth:`SDICModel.invert` or :meth:`SDICModel.edit`.

    Images are float tensors in [-1, 1] (unclamped) on the model's device;
    ``image`` is at the generator's full resolution.
    """

    input: torch.Tensor  # [B, 3, S, S] the canvas the networks saw
    codes: torch.Tensor  # [B, n_latent, style_dim] e4e W+ plus latent_avg
    latents: torch.Tensor  # [B, n_latent, style_dim] compensated W' (edited W_e after an edit)
    discrepancy: torch.Tensor  # [B, 3, S, S] DIPN output
    initial_image: torch.Tensor  # [B, 3, R, R] e4e reconstruction G(codes)
    image: torch.Tensor  # [B, 3, R, R] SDIC result
    tap: torch.Tensor  # [B, C, T, T] G7, the generator's tap feature for ``codes``
    feature: torch.Tensor  # [B, C, T, T] F, the compensated tap feature
    content_rows: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.image.shape[0]

    def to_pil(self, which: str = "image", crop: bool = True) -> list[Image.Image]:
        """PIL images of ``image``, ``initial_image``, ``input`` or ``discrepancy``.

        ``crop`` cuts generator outputs to the content rows (cars: 384x512).
        """
        tensor = getattr(self, which)
        if which == "discrepancy":
            return images.discrepancy_to_pil(tensor)
        if crop and which in ("image", "initial_image"):
            tensor = images.crop_rows(tensor, self.content_rows)
        return images.tensor_to_pil(tensor)

    def detach_cpu(self) -> Inversion:
        fields = {k: v.detach().cpu() for k, v in self.__dict__.items() if isinstance(v, torch.Tensor)}
        return replace(self, **fields)

    def _settled(self) -> Inversion:
        """Every tensor as contiguous fp32 (after reduced-precision or channels-last compute)."""
        fields = {k: v.float().contiguous() for k, v in self.__dict__.items() if isinstance(v, torch.Tensor)}
        return replace(self, **fields)


class SDICModel(nn.Module):
    """Generator, e4e encoder, DIPN and DICN, built from one :class:`SDICConfig`.

    ``precision`` ("fp32" or "bf16") is the default arithmetic of :meth:`invert`
    and :meth:`edit`; bf16 runs them under autocast on the model's device.
    """

    def __init__(self, config: SDICConfig, precision: str = "fp32") -> None:
        super().__init__()
        self.config = config
        self.precision = _check_precision(precision)
        g = config.generator
        self.generator = Generator(g, tap_resolution=config.tap_resolution)
        self.encoder = Encoder4Editing(config.encoder, g.n_latent, g.style_dim)
        self.dipn = DIPN(config.dipn)
        self.dicn = DICN(config)
        self.register_buffer("latent_avg", torch.zeros(g.n_latent, g.style_dim))

    @property
    def device(self) -> torch.device:
        return self.latent_avg.device

    def prepare_inference(self) -> SDICModel:
        """Eval mode with the inference execution for the model's device and precision.

        ``sdic.load`` calls it; call it again after moving the model to another device or
        changing its weights (the fast ops derive folded and cast weights from them once).
        """
        super().train(False)
        return set_execution(self, Execution.inference(self.device, autocast_dtype(self.precision)))

    def train(self, mode: bool = True) -> SDICModel:
        """Training mode also restores the ordinary differentiable execution (no derived weights)."""
        super().train(mode)
        if mode:
            set_execution(self, TRAINING)
        return self

    # ----------------------------------------------------------------- inputs
    def prepare(self, x: ImageInput) -> torch.Tensor:
        """Turn tensors, PIL images, paths or a list of them into the input canvas [B,3,S,S]."""
        canvas = images.to_canvas(x, self.config)
        return canvas.to(self.device, self.latent_avg.dtype)

    # -------------------------------------------------------------- pipeline
    def encode(self, canvas: torch.Tensor) -> torch.Tensor:
        """e4e W+ codes (with latent_avg added) for an input canvas."""
        encoder_input = images.encoder_view(canvas, self.config)
        return self.encoder(encoder_input) + self.latent_avg

    def reconstruction_for_dipn(self, image: torch.Tensor, canvas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(photo canvas, reconstruction) at the input size, as DIPN compares them."""
        size = self.config.input_size
        recon = F.interpolate(image.clamp(-1, 1), size=(size, size), mode="bilinear", align_corners=False)
        return images.fill_outside_content(canvas, recon, self.config), recon

    def forward(self, canvas: torch.Tensor, noise: list[torch.Tensor] | None = None) -> Inversion:
        """Differentiable inversion of an input canvas (used by training and :meth:`invert`)."""
        codes = self.encode(canvas)
        state = self.generator.to_tap(codes, noise)
        initial = self.generator.from_tap(codes, state.feature, state.skip, noise)
        photo, recon = self.reconstruction_for_dipn(initial, canvas)
        discrepancy = self.dipn(photo, recon)
        feature, latents = self.dicn(discrepancy, state.feature, codes)
        image, _ = self.generator(latents, noise, tap_feature=feature)
        return Inversion(
            input=canvas, codes=codes, latents=latents, discrepancy=discrepancy,
            initial_image=initial, image=image, tap=state.feature, feature=feature,
            content_rows=self.config.content_rows,
        )

    @torch.no_grad()
    def invert(
        self, x: ImageInput, noise: list[torch.Tensor] | None = None, precision: str | None = None,
    ) -> Inversion:
        """Invert images: a [B,3,S,S] tensor in [-1,1], PIL image(s) or path(s).

        ``precision`` ("fp32" or "bf16", default :attr:`precision`) selects the
        arithmetic; the returned tensors are fp32 either way.
        """
        canvas = self.prepare(x)
        with precision_context(precision or self.precision, canvas.device):
            inversion = self(canvas, noise)
        return inversion._settled()

    @torch.no_grad()
    def edit(
        self, inversion: Inversion, direction: str | torch.Tensor | editing.Direction,
        factor: float = 1.0, noise: list[torch.Tensor] | None = None, precision: str | None = None,
    ) -> Inversion:
        """Move the compensated code along ``direction`` and carry the compensation along.

        Reuses the inversion (no encoder, DIPN or DICN): one synthesis to the tap
        for the edited code, then one from the tap.
        """
        direction = editing.resolve(direction, self.config)
        edited = direction.apply(inversion.latents.to(self.device), factor)
        with precision_context(precision or self.precision, self.device):
            result = self.synthesize_edit(inversion, edited, noise)
        return result._settled()

    def synthesize_edit(
        self, inversion: Inversion, edited: torch.Tensor, noise: list[torch.Tensor] | None = None,
    ) -> Inversion:
        """Render edited latents with the feature compensation F - G7 + G7_e."""
        state = self.generator.to_tap(edited, noise)
        feature = inversion.feature.to(self.device) - inversion.tap.to(self.device) + state.feature
        image = self.generator.from_tap(edited, feature, state.skip, noise)
        return replace(inversion, latents=edited, image=image, feature=feature, tap=state.feature)

    @torch.no_grad()
    def generate(self, latents: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Plain generator output for W+ latents (e.g. e4e codes without compensation)."""
        image, _ = self.generator(latents.to(self.device), noise)
        return image
