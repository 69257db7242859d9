"""Latent editing directions: InterFaceGAN vectors and GANSpace PCA edits.

The published directions ship inside the package (``sdic/data/directions``,
see the README there for their origin); so do directions learned for the bundled
model (a sub-folder per direction set, one ``<name>.safetensors`` per direction). A direction moves W+ codes; the SDIC
compensation is carried through the edit by :meth:`sdic.SDICModel.edit`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from safetensors.torch import load_file

from ..errors import InputError, InputTypeError

if TYPE_CHECKING:
    from ..config import SDICConfig


class Direction(Protocol):
    """Anything that maps W+ latents [B, n, D] and a factor to edited latents."""

    def apply(self, latents: torch.Tensor, factor: float) -> torch.Tensor: ...


@dataclass(frozen=True)
class LinearDirection:
    """InterFaceGAN-style edit: W + factor * d, with d of shape [D] or [n, D].

    ``metadata``: what a direction file says about it (:func:`load_direction`; docs/directions.md).
    """

    vector: torch.Tensor
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def apply(self, latents: torch.Tensor, factor: float) -> torch.Tensor:
        check_factor(factor)
        vector = self.vector.to(latents)
        if vector.ndim == 1:
            vector = vector[None]
        if vector.ndim != 2 or vector.shape[-1] != latents.shape[-1] or vector.shape[0] not in (1, latents.shape[1]):
            n, dim = latents.shape[1:]
            raise InputError(
                f"a direction of shape {list(self.vector.shape)} does not fit this model: expected "
                f"[{dim}], [1, {dim}] or [1, {n}, {dim}] ({n} latents of width {dim})"
            )
        return latents + factor * vector[None]


@dataclass(frozen=True)
class GANSpaceDirection:
    """GANSpace edit: set PCA component ``index`` to ``strength * factor`` on rows [start, end).

    The component value is measured on the first latent row (as the authors do);
    ``factor`` = 1 reproduces the published edit.
    """

    mean: torch.Tensor  # [1, D]
    components: torch.Tensor  # [K, 1, D]
    stds: torch.Tensor  # [K]
    index: int
    start: int
    end: int
    strength: float

    def apply(self, latents: torch.Tensor, factor: float) -> torch.Tensor:
        check_factor(factor)
        if self.end > latents.shape[1]:
            raise InputError(f"GANSpace edit rows {self.start}..{self.end} exceed {latents.shape[1]} latents")
        comp = self.components[self.index].to(latents)  # [1, D]
        std = float(self.stds[self.index])
        value = ((latents[:, 0] - self.mean.to(latents)) * comp).sum(-1) / std  # [B]
        delta = (self.strength * factor - value)[:, None] * comp * std  # [B, D]
        edited = latents.clone()
        edited[:, self.start:self.end] += delta[:, None, :]
        return edited


def check_factor(factor: float) -> float:
    """Refuse a non-finite edit factor (it would turn every output black)."""
    if not isinstance(factor, (int, float)) or isinstance(factor, bool):
        raise InputError(f"the edit factor must be a number, got {type(factor).__name__}")
    if not math.isfinite(factor):
        raise InputError(f"the edit factor must be a finite number, got {factor}")
    return float(factor)


def check_finite(vector: torch.Tensor, label: str = "the direction") -> torch.Tensor:
    """Refuse a direction holding NaN or infinite values."""
    if not vector.is_floating_point():
        raise InputError(f"{label} must be a float tensor, got dtype {vector.dtype}")
    bad = int((~torch.isfinite(vector)).sum())
    if bad:
        raise InputError(f"{label} holds {bad} NaN or infinite values (of {vector.numel()})")
    return vector


# The published edits of the authors' models. GANSpace: (component, first row, last row
# exclusive, strength).
GANSPACE_EDITS = {
    "ffhq": {"eyes": (54, 7, 8, 20.0), "beard": (58, 7, 9, -20.0), "lip": (34, 10, 11, 20.0)},
    "cars": {"left": (0, 0, 5, 2.0), "right": (0, 0, 5, -2.0), "cube": (16, 3, 6, 25.0),
             "color": (22, 9, 11, -8.0), "grass": (41, 9, 11, -18.0)},
}
INTERFACEGAN_EDITS = {"ffhq": ("age", "smile", "pose"), "cars": ()}
PCA_FILES = {"ffhq": "ffhq_pca", "cars": "cars_pca"}
DIRECTIONS = resources.files("sdic") / "data" / "directions"


def _learned_names(direction_set: str) -> list[str]:
    folder = DIRECTIONS / direction_set
    if not direction_set or direction_set in PCA_FILES or not folder.is_dir():
        return []
    return sorted(entry.name.removesuffix(".safetensors") for entry in folder.iterdir()
                  if entry.name.endswith(".safetensors"))


def available(direction_set: str) -> list[str]:
    """Names of the bundled directions of a set (``ffhq``, ``cars``, or a learned set)."""
    published = sorted(INTERFACEGAN_EDITS.get(direction_set, ())) + sorted(GANSPACE_EDITS.get(direction_set, {}))
    return published + _learned_names(direction_set)


@cache
def _bundled(relative: str) -> dict[str, torch.Tensor]:
    with resources.as_file(DIRECTIONS / f"{relative}.safetensors") as file:
        return load_file(str(file))


def named(name: str, direction_set: str) -> Direction:
    """A bundled direction by name (e.g. ``age`` of ``ffhq``, ``cube`` of ``cars``)."""
    if name in INTERFACEGAN_EDITS.get(direction_set, ()):
        return LinearDirection(_bundled(f"{direction_set}_{name}")["direction"][0])
    if name in GANSPACE_EDITS.get(direction_set, {}):
        pca = _bundled(PCA_FILES[direction_set])
        index, start, end, strength = GANSPACE_EDITS[direction_set][name]
        return GANSpaceDirection(pca["mean"], pca["comp"], pca["std"], index, start, end, strength)
    if name in _learned_names(direction_set):
        return LinearDirection(_bundled(f"{direction_set}/{name}")["direction"].reshape(-1))
    choices = ", ".join(available(direction_set)) or "none bundled; pass a direction file"
    raise InputError(f"unknown direction {name!r} for this model; available: {choices}")


def factor_range(name: str, direction_set: str) -> tuple[float, float] | None:
    """The useful factor range stored with a learned direction (metadata ``factor_range``)."""
    if name not in _learned_names(direction_set):
        return None
    from safetensors import safe_open

    with resources.as_file(DIRECTIONS / direction_set / f"{name}.safetensors") as file:
        with safe_open(str(file), framework="pt") as handle:
            value = (handle.metadata() or {}).get("factor_range")
    if value is None:
        return None
    low, high = json.loads(value)
    return float(low), float(high)


@dataclass(frozen=True)
class DirectionInfo:
    """What ``sdic directions list`` shows for a bundled direction."""

    name: str
    kind: str  # "InterFaceGAN", "GANSpace" or "learned"
    factor_range: tuple[float, float] | None
    factors: str  # the useful factors, in words


def describe(direction_set: str) -> list[DirectionInfo]:
    """The bundled directions of a set with their useful factors (stored ranges where there are)."""
    out = []
    for name in available(direction_set):
        if name in GANSPACE_EDITS.get(direction_set, {}):
            index, start, end, strength = GANSPACE_EDITS[direction_set][name]
            out.append(DirectionInfo(name, "GANSpace", None, f"1 = the published edit (component {index} "
                                     f"set to {strength:g} std on latents {start}..{end - 1}); 0 = none"))
        elif name in INTERFACEGAN_EDITS.get(direction_set, ()):
            out.append(DirectionInfo(name, "InterFaceGAN", None,
                                     "no range stored (unit-norm boundary; sdic demo sweeps -3 .. 3)"))
        else:
            low_high = factor_range(name, direction_set)
            text = f"{low_high[0]:g} .. {low_high[1]:g}" if low_high else "no range stored"
            out.append(DirectionInfo(name, "learned", low_high, text))
    return out


def resolve(direction: str | torch.Tensor | Direction, config: SDICConfig) -> Direction:
    """Accept a bundled name, a tensor ([D], [1, D], [n, D] or [1, n, D]) or a Direction."""
    if isinstance(direction, str):
        return named(direction, config.directions)
    if isinstance(direction, torch.Tensor):
        return LinearDirection(_squeezed(check_finite(direction.detach())))
    if hasattr(direction, "apply"):
        return direction
    raise InputTypeError(f"cannot use {type(direction).__name__} as an edit direction")


def _squeezed(vector: torch.Tensor) -> torch.Tensor:
    """[D] or [n, D] from [D], [1, D], [n, D] or [1, n, D]."""
    while vector.ndim > 2 and vector.shape[0] == 1:
        vector = vector[0]
    if vector.ndim == 2 and vector.shape[0] == 1:
        vector = vector[0]
    return vector


DIRECTION_FILE_SUFFIXES = (".pt", ".pth", ".npy", ".safetensors")


def looks_like_file(spec: str) -> bool:
    """Whether a ``--direction`` value names a file rather than a bundled direction."""
    return spec.lower().endswith(DIRECTION_FILE_SUFFIXES) or "/" in spec or "\\" in spec


def load_direction(path: str | Path) -> LinearDirection:
    """The direction of a ``.pt``, ``.npy`` or ``.safetensors`` file, for :meth:`sdic.SDICModel.edit`.

    Our direction files (``sdic directions train``) also give their metadata, JSON values
    decoded (``target``, ``factor_range``, ...); errors as for :func:`load_direction_file`.
    """
    vector = load_direction_file(path)
    metadata = _safetensors_metadata(Path(path)) if Path(path).suffix.lower() == ".safetensors" else {}
    return LinearDirection(_squeezed(vector), metadata)


def _safetensors_metadata(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        raw = dict(handle.metadata() or {})
    return {key: decode_metadata(value) for key, value in raw.items()}


def decode_metadata(value: str) -> Any:
    """A direction file's metadata value: JSON where it parses, else the string itself."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def load_direction_file(path: str | Path) -> torch.Tensor:
    """The direction tensor of a ``.pt``, ``.npy`` or ``.safetensors`` file, with specific errors.

    A missing file, a file that is not a direction file (wrong format, several tensors,
    not a tensor) and non-finite values are reported as such.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such direction file" if not path.is_dir()
                         else f"{path}: is a folder, not a direction file")
    tensor = _read_direction(path)
    if tensor.ndim == 0 or tensor.numel() == 0:
        raise InputError(f"{path}: not a direction file: holds a tensor of shape {list(tensor.shape)}")
    return check_finite(tensor, f"{path}: the direction")


def _read_direction(path: Path) -> torch.Tensor:
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        tensors = _read_safetensors(path)
        if "direction" in tensors:
            return tensors["direction"]
        if len(tensors) != 1:
            raise InputError(f"{path}: not a direction file: expected one tensor (or one named 'direction'), "
                             f"found {sorted(tensors) or 'none'}")
        return next(iter(tensors.values()))
    if suffix == ".npy":
        import numpy as np

        with open(path, "rb") as handle:
            if handle.read(6) != b"\x93NUMPY":
                raise InputError(f"{path}: not a direction file: not a NumPy .npy array (no NPY header; "
                                 "a text or pickle file named .npy?)")
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False))
        except (ValueError, OSError, EOFError) as error:
            raise InputError(f"{path}: not a direction file: not a numeric .npy array ({error})") from None
    from ..checkpoints import CheckpointError, torch_load

    try:
        tensor = torch_load(path)
    except CheckpointError as error:
        raise InputError(f"not a direction file: {error}") from None
    if not isinstance(tensor, torch.Tensor):
        raise InputError(f"{path}: not a direction file: holds a {type(tensor).__name__}, not a tensor")
    return tensor


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"{path}: not a direction file: not a readable safetensors file ({error})") from None
