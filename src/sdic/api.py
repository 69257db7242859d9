"""``sdic.load``: one entry point for every kind of SDIC model file."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .checkpoints import Kind, build_model, read_checkpoint, require_kind
from .checkpoints.bundled import bundled_path, resolve_source
from .devices import resolve_device
from .model import SDICModel, check_precision

# What a bundled model is not for, said once when it is used on photos (``--align``).
BUNDLED_PHOTO_NOTES: dict[str, str] = {
    "default": "the bundled model 'default' was trained on synthetic cartoon faces (docs/default_model.md); "
               "real photos need the authors' FFHQ checkpoint (README.md, section \"The authors' checkpoints\")",
}


def load(
    path_or_name: str | Path, device: str | torch.device = "cpu", precision: str = "fp32",
) -> SDICModel:
    """Load an SDIC model (eval mode) from an authors' checkpoint, our format or a bundled name.

    ``precision`` ("fp32", "bf16" or "fp16") is the model's default for ``invert`` and
    ``edit`` (bf16, fp16: autocast on ``device``); the weights stay fp32 either way.
    ``device`` must exist here (:class:`~sdic.devices.DeviceError` lists those that do).
    """
    device = resolve_device(device)  # before reading a large file for a device that does not exist
    check_precision(precision)
    if precision == "fp16" and device.type == "cpu":
        warnings.warn("fp16 on a CPU runs PyTorch's reference convolutions, many times slower than fp32; "
                      "it is meant for GPUs without bf16 (on a CPU use fp32 or bf16)", stacklevel=2)
    path = resolve_source(path_or_name)
    checkpoint = require_kind(read_checkpoint(path), (Kind.SDIC,), "an SDIC checkpoint")
    model = build_model(checkpoint, precision)
    model.source = str(path_or_name)
    return model.to(device).prepare_inference()


def photo_note(model: SDICModel) -> str | None:
    """The note for aligning photos for a bundled model (loaded by name or from its file), else None."""
    source = str(model.source or "")
    for name, note in BUNDLED_PHOTO_NOTES.items():
        bundled = bundled_path(name)
        if source == name or (bundled is not None and source and Path(source).resolve() == bundled.resolve()):
            return note
    return None
