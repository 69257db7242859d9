"""``Inversion``: the result of an inversion or an edit, as a batch and as a file.

An inversion holds everything an SDIC edit needs (the compensated code W', the
tap feature G7 and the compensated feature F) plus the pictures, so it can be
saved once and edited any time later without the photo and without running the
encoder, DIPN or DICN again. The file is one safetensors file: the tensors by
field name, and metadata naming the model that made it (a digest of its
weights, its config name and file) and the input file of every row.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image

from . import images
from .errors import InputError, SDICError
from .files import file_sha256, save_safetensors

FILE_FORMAT = "sdic-inversion"
FILE_VERSION = "1"
TENSOR_FIELDS = ("input", "codes", "latents", "discrepancy", "initial_image", "image", "tap", "feature")
IMAGE_FIELDS = ("image", "initial_image", "input", "discrepancy")


class InversionFileError(SDICError, ValueError):
    """A file is not a readable inversion file (missing, corrupt, not ours, inconsistent)."""


class IncompatibleModelError(InputError):
    """An inversion cannot be edited with this model (other weights or other latent shapes)."""


@dataclass
class Inversion:
    """Result of :meth:`SDICModel.invert` or :meth:`SDICModel.edit`: a batch of B rows.

    Images are float tensors in [-1, 1] (unclamped) on the model's device;
    ``image`` is at the generator's full resolution. ``len``, indexing
    (``inv[2]`` is a batch of one), slicing and :meth:`cat` work on rows;
    :meth:`save` / :meth:`load` write and read one safetensors file.
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
    # Which model made it (set by SDICModel.invert): sha256 of its weights, config name, file.
    model_digest: str | None = None
    model_name: str | None = None
    model_file: str | None = None
    # Per row: the input file (None for tensors and PIL images) and the sha256 of its bytes.
    sources: tuple[str | None, ...] | None = None
    source_sha256: tuple[str | None, ...] | None = None

    # ------------------------------------------------------------------ batch
    def __len__(self) -> int:
        return self.image.shape[0]

    def __getitem__(self, index: int | slice | Sequence[int] | torch.Tensor) -> Inversion:
        """Rows of the batch; an integer gives a batch of one (``inv[2]``), a slice or list several."""
        if isinstance(index, slice):
            rows = list(range(len(self)))[index]
        else:
            if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
                index = index.nonzero().flatten()
            try:
                rows = [operator.index(index)]  # int, NumPy integer, one-element integer tensor
            except TypeError:
                rows = [int(i) for i in (index.tolist() if isinstance(index, torch.Tensor) else index)]
            bad = [i for i in rows if not -len(self) <= i < len(self)]
            if bad:
                raise IndexError(f"row(s) {bad} of an inversion of {len(self)}")
            rows = [i % len(self) for i in rows]
        picked = {name: getattr(self, name)[rows] for name in TENSOR_FIELDS}
        return replace(self, **picked, sources=_pick(self.sources, rows),
                       source_sha256=_pick(self.source_sha256, rows))

    def __iter__(self) -> Iterator[Inversion]:
        return (self[i] for i in range(len(self)))

    @classmethod
    def cat(cls, parts: Sequence[Inversion]) -> Inversion:
        """One batch from several inversions of the same model (rows in order)."""
        parts = list(parts)
        if not parts:
            raise InputError("Inversion.cat needs at least one inversion")
        first = parts[0]
        for other in parts[1:]:
            if other.model_digest != first.model_digest:
                raise IncompatibleModelError(
                    f"cannot concatenate inversions of two models: {describe_model(first)} "
                    f"and {describe_model(other)}")
            if other.content_rows != first.content_rows:
                raise InputError(f"cannot concatenate inversions with content rows {first.content_rows} "
                                 f"and {other.content_rows}")
        device = first.latents.device
        joined = {}
        for name in TENSOR_FIELDS:
            tensors = [getattr(p, name).to(device) for p in parts]
            shapes = {tuple(t.shape[1:]) for t in tensors}
            if len(shapes) > 1:
                raise InputError(f"cannot concatenate inversions whose {name} shapes differ: {sorted(shapes)}")
            joined[name] = torch.cat(tensors)
        return replace(first, **joined, sources=_joined(parts, "sources"),
                       source_sha256=_joined(parts, "source_sha256"))

    # ----------------------------------------------------------------- images
    def to_pil(self, which: str = "image", crop: bool = True) -> list[Image.Image]:
        """PIL images of ``image``, ``initial_image``, ``input`` or ``discrepancy``.

        ``crop`` cuts generator outputs to the content rows (cars: 384x512).
        """
        if which not in IMAGE_FIELDS:
            raise InputError(f"to_pil({which!r}): only the image fields {', '.join(IMAGE_FIELDS)} are pictures")
        tensor = getattr(self, which)
        if which == "discrepancy":
            return images.discrepancy_to_pil(tensor)
        if crop and which in ("image", "initial_image"):
            tensor = images.crop_rows(tensor, self.content_rows)
        return images.tensor_to_pil(tensor)

    def detach_cpu(self) -> Inversion:
        """A copy on the CPU, outside autograd (what the web UI keeps between requests)."""
        return replace(self, **{name: getattr(self, name).detach().cpu() for name in TENSOR_FIELDS})

    def _settled(self) -> Inversion:
        """Every tensor as contiguous fp32 (after reduced-precision or channels-last compute)."""
        return replace(self, **{name: getattr(self, name).float().contiguous() for name in TENSOR_FIELDS})

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the inversion as one safetensors file (atomically: a reader never sees half a file)."""
        path = Path(path)
        tensors = {name: getattr(self, name).detach().cpu().contiguous() for name in TENSOR_FIELDS}
        metadata = {"format": FILE_FORMAT, "format_version": FILE_VERSION,
                    "content_rows": json.dumps(self.content_rows),
                    "sources": json.dumps(list(self.sources or [None] * len(self))),
                    "source_sha256": json.dumps(list(self.source_sha256 or [None] * len(self)))}
        for key in ("model_digest", "model_name", "model_file"):
            if getattr(self, key) is not None:
                metadata[key] = getattr(self, key)
        return save_safetensors(tensors, path, metadata, durable=False)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Inversion:
        """Read a file written by :meth:`save`; ``model.edit`` on it equals the edit of the original."""
        path = Path(path)
        metadata = read_metadata(path)
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path), device=str(device))
        except Exception as error:  # safetensors raises its own error types
            raise InversionFileError(f"{path}: not a readable inversion file ({error})") from None
        missing = [name for name in TENSOR_FIELDS if name not in tensors]
        if missing:
            raise InversionFileError(f"{path}: an inversion file without {', '.join(missing)}")
        sizes = {name: tensors[name].shape[0] if tensors[name].ndim else 0 for name in TENSOR_FIELDS}
        if len(set(sizes.values())) != 1:
            raise InversionFileError(f"{path}: the fields hold different numbers of rows: {sizes}")
        try:
            rows = json.loads(metadata.get("content_rows", "null"))
            sources = json.loads(metadata.get("sources", "null"))
            sha = json.loads(metadata.get("source_sha256", "null"))
        except json.JSONDecodeError as error:
            raise InversionFileError(f"{path}: invalid metadata ({error})") from None
        batch = sizes["image"]
        return cls(**{name: tensors[name] for name in TENSOR_FIELDS},
                   content_rows=tuple(rows) if rows is not None else None,
                   model_digest=metadata.get("model_digest"), model_name=metadata.get("model_name"),
                   model_file=metadata.get("model_file"),
                   sources=_rows_or_none(sources, batch), source_sha256=_rows_or_none(sha, batch))


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of an inversion file (reads only its header); errors say what is wrong."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InversionFileError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types
        raise InversionFileError(f"{path}: not a readable inversion file ({error})") from None
    if metadata.get("format") != FILE_FORMAT:
        raise InversionFileError(f"{path}: a safetensors file but not an sdic inversion "
                                 "(write one with Inversion.save or `sdic invert --save-latents safetensors`)")
    if metadata.get("format_version") != FILE_VERSION:
        raise InversionFileError(f"{path}: inversion file version {metadata.get('format_version')!r}; "
                                 f"this sdic reads version {FILE_VERSION}")
    return metadata


def describe_model(inversion: Inversion) -> str:
    """Which model made an inversion, for messages: config name, file and short digest."""
    if inversion.model_digest is None:
        return "an unknown model (the inversion records none)"
    name = inversion.model_name or "unnamed"
    where = f", {Path(inversion.model_file).name}" if inversion.model_file else ""
    return f"model {name!r} ({inversion.model_digest[:12]}{where})"


def with_sources(inversion: Inversion, paths: Sequence[str | Path | None]) -> Inversion:
    """The inversion with its rows' input files (and their sha256) recorded."""
    if len(paths) != len(inversion):
        raise InputError(f"{len(paths)} input files for an inversion of {len(inversion)} rows")
    names = tuple(None if p is None else str(p) for p in paths)
    sha = tuple(None if p is None else file_sha256(p) for p in paths)
    return replace(inversion, sources=names, source_sha256=sha)


def _pick(values: tuple | None, rows: list[int]) -> tuple | None:
    return None if values is None else tuple(values[i] for i in rows)


def _joined(parts: Sequence[Inversion], name: str) -> tuple | None:
    if all(getattr(p, name) is None for p in parts):
        return None
    return tuple(v for p in parts for v in (getattr(p, name) or (None,) * len(p)))


def _rows_or_none(values: list | None, batch: int) -> tuple | None:
    if values is None or all(v is None for v in values):
        return None
    return tuple(values) if len(values) == batch else None

