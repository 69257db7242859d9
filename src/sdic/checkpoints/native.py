"""Our format: one safetensors file, tensors in our names, the model configuration in its metadata.

Metadata: ``format`` ("sdic"), ``format_version``, ``kind`` (:class:`~.kinds.Kind`) and
``config`` (the JSON :class:`~sdic.config.SDICConfig`). Files are written atomically with
the user's umask (``sdic.files.save_safetensors``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..config import SDICConfig
from ..files import save_safetensors
from .authors import infer_generator
from .kinds import Checkpoint, CheckpointError, Kind
from .sniffing import NOT_A_CHECKPOINT, check_file, file_format

FORMAT_NAME = "sdic"
FORMAT_VERSION = "1"
HALF_MIN_NUMEL = 4096  # smaller tensors (biases, BN statistics, noise weights) stay float32
CONFIG_MISMATCH = "its tensors do not match the model configuration in its metadata"


# ------------------------------------------------------------------ writing
def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | Path, config: SDICConfig,
                 kind: Kind | str = Kind.SDIC, half: bool = False) -> Path:
    """Write ``tensors`` (our names) as safetensors with the JSON config in the metadata (atomically).

    ``half`` stores the float32 tensors of at least ``HALF_MIN_NUMEL`` values as
    float16 (half the file; loading casts them back to float32).
    """
    kind = Kind.named(str(kind), str(path))
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    if half:
        tensors = {k: v.half() if v.dtype == torch.float32 and v.numel() >= HALF_MIN_NUMEL else v
                   for k, v in tensors.items()}
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "kind": kind.value,
                "config": config.to_json()}
    return save_safetensors(tensors, path, metadata)


def save_model(model: torch.nn.Module, path: str | Path, config: SDICConfig, kind: Kind | str = Kind.SDIC,
               half: bool = False) -> Path:
    """:func:`save_tensors` of a module's state dict."""
    return save_tensors(model.state_dict(), path, config, kind, half)


# ------------------------------------------------------------------ reading
def read_native(path: str | Path) -> Checkpoint:
    """Read our safetensors format (tensors, kind and the configuration they must match)."""
    path = Path(path)
    check_file(path)
    if file_format(path) != "safetensors":
        raise CheckpointError(f"{path}: {NOT_A_CHECKPOINT}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path}: not a readable safetensors file; it is truncated or corrupt ({error})") from None
    if metadata.get("format") != FORMAT_NAME or "config" not in metadata:
        raise CheckpointError(f"{path}: a safetensors file without sdic metadata (format/config)")
    try:
        config = SDICConfig.from_json(metadata["config"])
    except (ValueError, TypeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: invalid model config in metadata ({error})") from None
    _check_generator_matches(config, tensors, path)
    kind = Kind.named(metadata.get("kind", Kind.SDIC.value), str(path))
    return Checkpoint(kind, tensors, config, path=str(path), native=True)


def _check_generator_matches(config: SDICConfig, tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    """Compare the generator the JSON config describes with the one the tensors hold."""
    if not any(k.startswith("generator.to_rgbs.") for k in tensors):
        return
    found = infer_generator(tensors, "generator.")
    wrong = [f"{name} {getattr(config.generator, name)} in the config, {getattr(found, name)} in the tensors"
             for name in ("size", "style_dim", "n_mlp") if getattr(config.generator, name) != getattr(found, name)]
    if wrong:
        raise CheckpointError(f"{path}: {CONFIG_MISMATCH}: generator " + "; ".join(wrong))
