"""Output folders of the commands: checked up front, one run at a time, unique names, atomic files.

A run that writes into a folder holds its lock file (``.sdic-run.lock``), so a second run
into the same folder is refused instead of overwriting the first one's results. Each file
is written under a temporary name and renamed into place, so a full disk or an interrupted
run never leaves a truncated result; the files written before stay. Two results that would
get the same file name get a numbered name instead, and the run says so: inside a run, and
across runs, as the folder records which source made each file (``.sdic-outputs.json``); a
re-run for the same source rewrites its own files. An output never overwrites an input.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import OutputError
from .files import atomic_write, write_error_reason

LOCK_NAME = ".sdic-run.lock"
RECORD_NAME = ".sdic-outputs.json"


def unique_stems(paths: Iterable[Path]) -> tuple[list[str], list[str]]:
    """One distinct name per path (``a``, then ``a_1``, ``a_2``, ... skipping taken names) and notes.

    Every path keeps its stem when it is the only one with it; later paths with an already
    used stem get the first free numbered name. Deterministic in the order of ``paths``.
    """
    paths = list(paths)
    taken = {path.stem for path in paths}
    used: set[str] = set()
    names, notes = [], []
    for path in paths:
        name = path.stem
        if name in used:
            name = _first_free(path.stem, taken | used)
            notes.append(f"two inputs are named {path.stem}: {path} is written as {name}")
        used.add(name)
        names.append(name)
    return names, notes


def _first_free(stem: str, taken: set[str], start: int = 1) -> str:
    count = start
    while f"{stem}_{count}" in taken:
        count += 1
    return f"{stem}_{count}"


class OutputFolder:
    """The folder a command writes into (use as a context manager: it holds the folder's lock).

    ``protect`` lists files that must never be overwritten (the run's inputs).
    ``note`` receives one line for every renamed output. ``exclusive=False`` is for the
    processes of one distributed run, which share the folder with disjoint names: no lock,
    and the record of sources is left alone.
    """

    def __init__(self, path: Path, protect: Iterable[Path] = (), note: Callable[[str], None] = print,
                 exclusive: bool = True) -> None:
        self.path = Path(path)
        self.exclusive = exclusive
        self.protect = {_resolved(p) for p in protect}
        self.note = note
        self.written: dict[str, str] = {}  # file name -> the source it was written for
        self.earlier: dict[str, str] = {}  # the same, for files of earlier runs
        self._lock: Path | None = None

    # ------------------------------------------------------------ the folder and its lock
    def __enter__(self) -> OutputFolder:
        self.prepare()
        if self.exclusive:
            self._acquire()
        self.earlier = _read_record(self.path / RECORD_NAME)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is None:
            return
        if self.written:
            _write_record(self.path / RECORD_NAME, {**self.earlier, **self.written})
        self._lock.unlink(missing_ok=True)
        self._lock = None

    def prepare(self) -> None:
        """Create the folder, or say why it cannot be one."""
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"{self.path}: exists and is not a folder; give a folder (new or existing) for -o")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{self.path}: cannot create the output folder ({write_error_reason(error)})") from None

    def _acquire(self) -> None:
        lock = self.path / LOCK_NAME
        owner = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                with open(lock, "x") as handle:
                    json.dump(owner, handle)
                self._lock = lock
                return
            except FileExistsError:
                other = _read_owner(lock)
                if not _is_stale(other, owner["host"]):
                    raise OutputError(
                        f"{self.path}: another sdic run (pid {other.get('pid', '?')} on {other.get('host', '?')}) "
                        f"is writing into this folder; wait for it or choose another -o folder "
                        f"(if no such run is going on, delete {lock})") from None
                lock.unlink(missing_ok=True)  # left behind by a run that no longer exists
            except OSError as error:
                raise OutputError(f"{self.path}: the output folder is not writable ({write_error_reason(error)})") from None
        raise OutputError(f"{self.path}: could not take the folder's lock {lock}")

    # ------------------------------------------------------------ names and files
    def claim(self, filename: str, source: str) -> Path:
        """The path for ``filename``; a name already written by this run, or an input, gets a number."""
        name = filename
        if self._clashes(name, source):
            stem, dot, suffix = filename.rpartition(".")
            stem, suffix = (stem, dot + suffix) if dot else (filename, "")
            count = 2
            while self._clashes(f"{stem}_{count}{suffix}", source):
                count += 1
            name = f"{stem}_{count}{suffix}"
            self.note(f"{self.path / filename} {self._reason(filename)}; writing {source} as {name}")
        self.written[name] = source
        return self.path / name

    def _clashes(self, name: str, source: str) -> bool:
        if _resolved(self.path / name) in self.protect:
            return True
        if name in self.written:
            return self.written[name] != source
        return self.earlier.get(name, source) != source and (self.path / name).exists()

    def _reason(self, name: str) -> str:
        if _resolved(self.path / name) in self.protect:
            return "would overwrite an input"
        if name in self.written:
            return f"is already written by this run for {self.written[name]}"
        return f"holds an earlier run's result for {self.earlier[name]}"

    def save(self, filename: str, write: Callable[[Path], None], source: str) -> Path:
        """Write a file atomically: ``write(temporary path)``, then rename it to its claimed name.

        On failure (disk full, permissions) the partial file is removed and an
        :class:`OutputError` says what was kept.
        """
        final = self.claim(filename, source)
        try:
            atomic_write(final, write, durable=False)
        except OutputError as error:
            self.written.pop(final.name, None)
            kept = len(self.written)
            raise OutputError(f"{final}: cannot write ({write_error_reason(error.__cause__)}); stopped, the "
                              f"{kept} files written before are kept in {self.path}") from None
        return final


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _read_record(path: Path) -> dict[str, str]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in record.items()} if isinstance(record, dict) else {}


def _write_record(path: Path, record: dict[str, str]) -> None:
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    try:
        atomic_write(path, lambda tmp: tmp.write_text(text), durable=False)
    except OutputError:  # a full disk: the results stay, only the record of their sources is lost
        pass


def _read_owner(lock: Path) -> dict:
    try:
        owner = json.loads(lock.read_text())
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


def _is_stale(owner: dict, host: str) -> bool:
    """A lock is stale when its run was on this machine and that process is gone."""
    pid = owner.get("pid")
    if owner.get("host") != host or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
