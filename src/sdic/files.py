"""Atomic file writes with ordinary permissions: the one helper every exporter uses.

A file is written under a temporary name in its own folder (``.NAME.tmpPID``, hidden and
never an image or checkpoint suffix), flushed to disk and moved into place with
``os.replace``: a crash leaves the previous file or the new one, never a partial one, and
a failed write removes its temporary file. The result gets the permissions any other tool
would give it (``0666`` minus the user's umask, or those of the file it replaces); writers
such as safetensors' ``save_file`` create ``0600`` files on their own.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import OutputError


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the only portable way is to set it and put it back
    os.umask(mask)
    return mask


def _final_mode(path: Path) -> int:
    """Permissions for a new ``path``: those of the file it replaces, else 0666 & ~umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


def temporary_name(path: Path) -> Path:
    """The temporary name :func:`atomic_write` uses for ``path`` (hidden, process-specific)."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], Any], durable: bool = True) -> Path:
    """Call ``write(tmp_path)``, then move the temporary file over ``path`` atomically.

    ``durable`` also flushes the file and its folder to disk (checkpoints, exports). The
    parent folder is created. Any ``OSError`` (not writable, disk full, the target is a
    folder) becomes an :class:`~sdic.errors.OutputError` naming ``path``; the temporary
    file is removed whatever happens.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, _final_mode(path))
        os.replace(tmp, path)
    except Exception as error:
        if not is_write_error(error):
            raise
        raise OutputError(f"{path}: could not be written ({write_error_reason(error)})") from error
    finally:
        if tmp.exists():
            tmp.unlink()
    if durable:
        _fsync_dir(path.parent)
    return path


def is_write_error(error: BaseException) -> bool:
    """An error of the file system (full, read-only, permissions), also as safetensors reports it."""
    if isinstance(error, OSError):
        return True
    from safetensors import SafetensorError

    return isinstance(error, SafetensorError)


def write_error_reason(error: BaseException) -> str:
    """A short reason for a failed write ("No space left on device", "it is a folder", ...)."""
    if isinstance(error, IsADirectoryError) or (
            isinstance(error, OSError) and error.filename2 and Path(error.filename2).is_dir()):
        return "it is a folder"
    if isinstance(error, OSError) and error.errno:
        return error.strerror or str(error)
    return str(error) or type(error).__name__


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def save_safetensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None,
                     durable: bool = True) -> Path:
    """``safetensors.torch.save_file`` through :func:`atomic_write` (umask permissions)."""
    from safetensors.torch import save_file

    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), durable)
