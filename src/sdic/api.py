"""``sdic.load``: one entry point for every kind of SDIC model file."""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoints import CheckpointError, load_into, read_checkpoint
from .model import SDICModel

BUNDLED_MODELS: dict[str, str] = {}  # name -> file inside sdic/data/models


def _bundled_path(name: str) -> Path | None:
    from importlib import resources

    if name not in BUNDLED_MODELS:
        return None
    return Path(str(resources.files("sdic") / "data" / "models" / BUNDLED_MODELS[name]))


def load(path_or_name: str | Path, device: str | torch.device = "cpu") -> SDICModel:
    """Load an SDIC model (eval mode) from an authors' checkpoint, our format or a bundled name."""
    path = _bundled_path(str(path_or_name)) or Path(path_or_name)
    if not path.exists() and not str(path_or_name).endswith((".pt", ".pth", ".safetensors", ".ckpt")) \
            and "/" not in str(path_or_name):
        known = ", ".join(sorted(BUNDLED_MODELS)) or "none yet"
        raise CheckpointError(f"{path_or_name}: no such file, and not a bundled model name (bundled: {known})")
    checkpoint = read_checkpoint(path)
    if checkpoint.kind != "sdic":
        hint = {
            "e4e": "it holds an e4e encoder and generator but no DIPN/DICN; train SDIC on it "
                   "with `sdic train sdic`",
            "stylegan2": "it holds only a StyleGAN2 generator",
            "ir_se50": "it is the ArcFace identity network used by the ID metric",
        }.get(checkpoint.kind, "")
        raise CheckpointError(f"{path}: not an SDIC checkpoint but a {checkpoint.kind} file; {hint}")
    assert checkpoint.config is not None
    model = SDICModel(checkpoint.config)
    load_into(model, checkpoint.tensors, str(path))
    return model.to(device).eval()
