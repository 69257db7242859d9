"""The models shipped inside the package, by name (``sdic.load("default")``, ``--init default``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .kinds import CheckpointError

BUNDLED_MODELS: dict[str, str] = {"default": "faces64.safetensors"}  # name -> file in sdic/data/models (docs/default_model.md)

_SUFFIXES = (".pt", ".pth", ".pkl", ".safetensors", ".ckpt")


def bundled_path(name: str) -> Path | None:
    """The file of a bundled model name, or None if ``name`` is not one."""
    if name not in BUNDLED_MODELS:
        return None
    return Path(str(resources.files("sdic") / "data" / "models" / BUNDLED_MODELS[name]))


def resolve_source(path_or_name: str | Path) -> Path:
    """A bundled name's file, else the path; a bare word that is neither is refused by name."""
    text = str(path_or_name)
    path = bundled_path(text) or Path(path_or_name)
    if not path.exists() and not text.endswith(_SUFFIXES) and "/" not in text:
        known = ", ".join(sorted(BUNDLED_MODELS)) or "none yet"
        raise CheckpointError(f"{path_or_name}: no such file, and not a bundled model name (bundled: {known})")
    return path
