"""Reading any supported file: the first reader of :data:`READERS` that accepts it reads it.

A new file format is one :class:`Reader` entry (before the catch-all authors' pickles); a
new layout of ``torch.save`` files is one :class:`~.authors.Layout` in ``authors.LAYOUTS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .authors import from_layout
from .kinds import Checkpoint
from .native import read_native
from .nvidia import is_network_pickle, read_nvidia_checkpoint
from .sniffing import file_format, torch_load


def read_authors_checkpoint(path: str | Path) -> Checkpoint:
    """Read an authors' SDIC, e4e, StyleGAN2 or IR-SE50 file (or a ``.pt`` export of ours) into our names."""
    return from_layout(torch_load(path), path)


@dataclass(frozen=True)
class Reader:
    """A file format: ``accepts(path, format from the first bytes or None)``, then ``read(path)``."""

    name: str
    accepts: Callable[[Path, str | None], bool]
    read: Callable[[Path], Checkpoint]


READERS = (
    Reader("sdic safetensors", lambda path, fmt: path.suffix == ".safetensors" or fmt == "safetensors", read_native),
    Reader("NVIDIA network pickle", lambda path, fmt: fmt == "pickle" and is_network_pickle(path),
           read_nvidia_checkpoint),
    # Last: every other file, so that a missing, empty or foreign file gets torch_load's clear error.
    Reader("PyTorch pickle in an authors' layout", lambda path, fmt: True, read_authors_checkpoint),
)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read any supported file: ours (``.safetensors``, by suffix or content) or the authors' pickles."""
    path = Path(path)
    fmt = file_format(path) if path.is_file() else None
    reader = next(reader for reader in READERS if reader.accepts(path, fmt))
    return reader.read(path)
