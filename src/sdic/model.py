"""The SDIC pipeline: e4e inversion, discrepancy prediction, compensation, editing.

``SDICModel.invert`` and ``SDICModel.edit`` implement the inversion and editing of docs/architecture.md:

    codes = e4e(x) + latent_avg
    R0, G7 = G(codes)
    D = DIPN(x, resize(clamp(R0)))
    F, W' = DICN(D, G7, codes)
    out = G(W', tap := F)

and for an edit W_e = edit(W'):  out = G(W_e, tap := F - G7 + tap(G(W_e))).
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from . import editing, images
from .config import SDICConfig
from .devices import warn_if_slow_bf16
from .errors import InputError, SDICError
from .inversion import IncompatibleModelError, Inversion, describe_model, with_sources
from .networks import DICN, DIPN, Encoder4Editing, Generator
from .ops import TRAINING, Execution, set_execution

ImageInput = torch.Tensor | Image.Image | np.ndarray | str | Path | list
OUTPUT_FIELDS = ("codes", "latents", "discrepancy", "initial_image", "image")  # checked for NaN/inf
EDIT_FIELDS = ("latents", "image")  # what an edit recomputes and returns

PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteOutputError(SDICError, FloatingPointError):
    """The model produced NaN or infinite values (reported instead of writing a black image).

    ``samples``: indices of the batch samples concerned.
    """

    def __init__(self, message: str, samples: list[int] | None = None) -> None:
        super().__init__(message)
        self.samples = list(samples or [])


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype ``precision`` computes convolutions in under autocast (None: fp32, no autocast)."""
    return _AUTOCAST.get(check_precision(precision))


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``bf16`` / ``fp16``: autocast to that type on the model's device type; ``fp32``: nothing.

    fp16 is for GPUs without bf16 (T4, V100); CPU autocast supports it too, but slowly.
    """
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    if dtype == torch.bfloat16:
        warn_if_slow_bf16(device, "precision bf16")
    try:
        return torch.autocast(device_type=device.type, dtype=dtype)
    except RuntimeError as error:  # a device type without autocast
        raise InputError(f"precision {precision!r} on {device.type}: {error}; use fp32") from None


def check_finite(result: Inversion, fields: tuple[str, ...], precision: str) -> Inversion:
    """``result``, or a :class:`NonFiniteOutputError` naming the field and the samples with NaN/inf.

    One ``isfinite(...).all()`` per field; the samples are looked for only on failure.
    """
    for name in fields:
        tensor = getattr(result, name)
        if bool(torch.isfinite(tensor).all()):
            continue
        bad = [i for i in range(tensor.shape[0]) if not bool(torch.isfinite(tensor[i]).all())]
        hint = (" fp16 overflowed: use precision fp32 or bf16" if precision == "fp16"
                else " check the input and the model file (sdic.load refuses NaN/inf weights)")
        raise NonFiniteOutputError(
            f"the model produced NaN/inf values in '{name}' for sample(s) {bad} of {tensor.shape[0]} "
            f"(precision {precision});{hint}", samples=bad)
    return result


class SDICModel(nn.Module):
    """Generator, e4e encoder, DIPN and DICN, built from one :class:`SDICConfig`.

    ``precision`` ("fp32", "bf16" or "fp16") is the default arithmetic of :meth:`invert`
    and :meth:`edit`; bf16 and fp16 run them under autocast on the model's device.
    """

    def __init__(self, config: SDICConfig, precision: str = "fp32") -> None:
        super().__init__()
        self.config = config
        self.precision = check_precision(precision)
        g = config.generator
        self.generator = Generator(g, tap_resolution=config.tap_resolution)
        self.encoder = Encoder4Editing(config.encoder, g.n_latent, g.style_dim)
        self.dipn = DIPN(config.dipn)
        self.dicn = DICN(config)
        self.register_buffer("latent_avg", torch.zeros(g.n_latent, g.style_dim))
        self.source: str | None = None  # the file or bundled name it was loaded from (sdic.load)
        self._digest: tuple[tuple, str] | None = None

    @property
    def digest(self) -> str:
        """sha256 of the weights (names, dtypes, shapes, values); recorded in every inversion.

        Cached, and recomputed only when a tensor was replaced or changed in place.
        """
        tensors = list(self.parameters()) + list(self.buffers())
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        if self._digest is None or self._digest[0] != key:
            self._digest = (key, weights_digest(self.state_dict()))
        return self._digest[1]

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
        """Invert images: path(s), PIL image(s), NumPy arrays or tensors, or a list of them.

        Tensors are float in [-1, 1], [3,H,W] or [B,3,H,W]; NumPy arrays are HWC uint8
        (read like a PIL image) or CHW float in [-1, 1]. Tensors and float arrays of
        another size are resized (bilinear, antialiased, as photos are) and framed
        like photos: faces fill the square canvas, cars are letterboxed. ``precision``
        ("fp32", "bf16" or "fp16", default :attr:`precision`) selects the arithmetic;
        the returned tensors are fp32 either way. NaN/inf in an output raises
        :class:`NonFiniteOutputError`. The result records this model's digest and the
        input files, so that it can be saved and edited later.
        """
        canvas = self.prepare(x)
        precision = precision or self.precision
        with precision_context(precision, canvas.device):
            inversion = self(canvas, noise)
        inversion = replace(inversion, model_digest=self.digest, model_name=self.config.name,
                            model_file=self.source)
        paths = images.input_paths(x)
        if paths is not None and any(paths):
            inversion = with_sources(inversion, paths)
        return check_finite(inversion._settled(), OUTPUT_FIELDS, precision)

    @torch.no_grad()
    def edit(
        self, inversion: Inversion, direction: str | torch.Tensor | editing.Direction,
        factor: float = 1.0, noise: list[torch.Tensor] | None = None, precision: str | None = None,
    ) -> Inversion:
        """Move the compensated code along ``direction`` and carry the compensation along.

        Reuses the inversion (no encoder, DIPN or DICN): one synthesis to the tap
        for the edited code, then one from the tap.
        """
        self.check_compatible(inversion)
        direction = editing.resolve(direction, self.config)
        edited = direction.apply(inversion.latents.to(self.device), factor)
        precision = precision or self.precision
        with precision_context(precision, self.device):
            result = self.synthesize_edit(inversion, edited, noise)
        return check_finite(result._settled(), EDIT_FIELDS, precision)

    def check_compatible(self, inversion: Inversion) -> None:
        """Refuse an inversion made by another model (other weights, or other latent shapes)."""
        if not isinstance(inversion, Inversion):
            raise InputError(f"edit needs an Inversion (from invert or Inversion.load), got {type(inversion).__name__}")
        digest = self.digest
        mine = f"model {self.config.name!r} ({digest[:12]}" + (f", {Path(self.source).name})" if self.source else ")")
        if inversion.model_digest is not None and inversion.model_digest != digest:
            raise IncompatibleModelError(
                f"this inversion was made by {describe_model(inversion)} and cannot be edited with "
                f"{mine}: their weights differ; edit it with the model that made it")
        g = self.config.generator
        expected = {"latents": (g.n_latent, g.style_dim),
                    "feature": (self.config.tap_channels, self.config.tap_resolution, self.config.tap_resolution)}
        expected["tap"] = expected["feature"]
        for name, shape in expected.items():
            actual = tuple(getattr(inversion, name).shape[1:])
            if actual != shape:
                raise IncompatibleModelError(
                    f"this inversion was made by {describe_model(inversion)} whose {name} are "
                    f"{list(actual)} per image; {mine} needs {list(shape)} ({g.n_latent} latents of "
                    f"width {g.style_dim}, a {self.config.tap_resolution}x{self.config.tap_resolution} tap)")

    def synthesize_edit(
        self, inversion: Inversion, edited: torch.Tensor, noise: list[torch.Tensor] | None = None,
    ) -> Inversion:
        """Render edited latents with the feature compensation F - G7 + G7_e."""
        image, feature, tap = compensated_synthesis(
            self.generator, edited, inversion.feature.to(self.device), inversion.tap.to(self.device), noise)
        return replace(inversion, latents=edited, image=image, feature=feature, tap=tap)

    @torch.no_grad()
    def generate(self, latents: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Plain generator output for W+ latents (e.g. e4e codes without compensation)."""
        image, _ = self.generator(latents.to(self.device), noise)
        return image


def compensated_synthesis(
    generator: Generator, edited: torch.Tensor, feature: torch.Tensor, tap: torch.Tensor,
    noise: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image, F_e, G7_e) for edited latents: ``G(W_e, tap := F - G7 + G7_e)``, F_e = F - G7 + G7_e.

    ``feature`` (F) and ``tap`` (G7) come from the inversion (or the previous edit); F_e and
    G7_e are what a further edit of the result needs.
    """
    state = generator.to_tap(edited, noise)
    compensated = feature - tap + state.feature
    return generator.from_tap(edited, compensated, state.skip, noise), compensated, state.feature


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()
