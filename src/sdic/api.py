"""``sdic.load``: one entry point for every kind of SDIC model file."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .checkpoints import CheckpointError, Kind, build_model, read_checkpoint, require_kind
from .devices import resolve_device
from .model import SDICModel, check_precision

BUNDLED_MODELS: dict[str, str] = {"default": "faces64.safetensors"}  # name -> file in sdic/data/models (docs/default_model.md)


def _bundled_path(name: str) -> Path | None:
    from importlib import resources

    if name not in BUNDLED_MODELS:
        return None
    return Path(str(resources.files("sdic") / "data" / "models" / BUNDLED_MODELS[name]))


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
    path = _bundled_path(str(path_or_name)) or Path(path_or_name)
    if not path.exists() and not str(path_or_name).endswith((".pt", ".pth", ".safetensors", ".ckpt")) \
            and "/" not in str(path_or_name):
        known = ", ".join(sorted(BUNDLED_MODELS)) or "none yet"
        raise CheckpointError(f"{path_or_name}: no such file, and not a bundled model name (bundled: {known})")
    checkpoint = require_kind(read_checkpoint(path), (Kind.SDIC,), "an SDIC checkpoint")
    model = build_model(checkpoint, precision)
    model.source = str(path_or_name)
    return model.to(device).prepare_inference()

