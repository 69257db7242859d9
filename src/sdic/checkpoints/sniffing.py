"""A file before it is parsed: clear errors for missing, empty or HTML files, the format from the first bytes,
and ``torch.load`` limited to weights.

Pickles are read with ``torch.load(weights_only=True)`` so that a file from the internet
cannot run code: anything but tensors and plain containers is refused.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .kinds import CheckpointError

NOT_A_CHECKPOINT = ("is not a checkpoint: its first bytes are neither a PyTorch file (zip or pickle) nor "
                    "safetensors (a different format, random bytes, or a damaged download)")


def check_file(path: Path) -> None:
    """A clear error for a missing, empty or folder path, or an HTML page saved in place of a checkpoint."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    with open(path, "rb") as handle:
        head = handle.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")):
        raise CheckpointError(
            f"{path}: this is an HTML page, not a checkpoint. Google Drive serves such a page "
            "when a file's download quota is exceeded or a confirmation is needed; download "
            "the file again (from the browser, or later)"
        )


def file_format(path: str | Path) -> str | None:
    """``"safetensors"``, ``"zip"`` (torch.save), ``"pickle"`` (legacy torch.save) or None, from the first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < Path(path).stat().st_size:
        return "safetensors"
    return None


def _unpickling_detail(error: Exception) -> str | None:
    """The line of a weights-only refusal naming the blocked global (None: not a refusal of code).

    torch words it "Unsupported global: GLOBAL x.y" or "... unsupported GLOBAL x.y whose module
    x is blocked"; random bytes give "Unsupported operand N" instead.
    """
    for line in str(error).splitlines():
        if "GLOBAL" in line.upper().split():
            return line.strip().removeprefix("WeightsUnpickler error:").strip()
    return None


def torch_load(path: str | Path) -> Any:
    """``torch.load`` limited to tensors and plain containers, with clear errors."""
    path = Path(path)
    check_file(path)
    if file_format(path) not in ("zip", "pickle"):
        raise CheckpointError(f"{path}: {NOT_A_CHECKPOINT}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        detail = _unpickling_detail(error)
        if detail is not None:
            raise CheckpointError(
                f"{path}: refused: the file contains Python objects other than tensors and plain "
                "containers, and unpickling them could run code. sdic only reads weights "
                f"(detail: {detail})"
            ) from None
        raise CheckpointError(
            f"{path}: corrupt checkpoint: the pickle inside cannot be read (truncated or damaged file)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(
            f"{path}: cannot read the checkpoint; the file is truncated or corrupt "
            f"(an interrupted download?) ({first})"
        ) from None
