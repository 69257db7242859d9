"""Dataset-scale runs of ``sdic invert`` and ``sdic edit``: shares, resume, index, inversion files.

Under ``torchrun`` (or with ``--shard K/N``) each process takes a disjoint,
deterministic share of the sorted input list: with shard K of N and rank r of
W processes, the files K + N*(r + W*j), j = 0, 1, ... (names are given before
the split, so every file gets the name a single run gives it). Outputs are
written atomically (a temporary file renamed into place), so a file that exists
is complete. ``sdic invert --save-latents safetensors`` skips an image whose
outputs all exist and whose inversion file records the same model digest and
the same input bytes: a rerun resumes after a crash or a pre-empted node. Rank 0
writes ``OUT/index.jsonl`` (``index-K-of-N.jsonl`` for a shard): one line per
file of the run with its output and status (written, existing, failed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..errors import InputError
from ..files import atomic_write
from ..inputs import Item, Unit, files_in, items_for
from ..inversion import (
    IncompatibleModelError,
    Inversion,
    InversionFileError,
    file_sha256,
    read_metadata,
)
from ..training.distributed import DistContext, cleanup, gather_objects, setup


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (0-based) of ``count`` equal, interleaved parts of the input list."""

    index: int = 0
    count: int = 1


def parse_shard(text: str) -> Shard:
    """``K/N`` with 0 <= K < N (SLURM: ``--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 0/4, got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text}: K must lie in 0..N-1")
    return Shard(index, count)


def add_options(parser: argparse.ArgumentParser, edit: bool) -> None:
    group = parser.add_argument_group("datasets (see also torchrun)")
    group.add_argument("--shard", type=parse_shard, default=Shard(), metavar="K/N",
                       help="process only part K (0-based) of N of the inputs, for jobs scheduled by hand")
    if edit:
        group.add_argument("--from-latents", nargs="+", metavar="FILE_OR_FOLDER",
                           help="edit saved inversions (from --save-latents safetensors) instead of photos")


def check_flags(args: argparse.Namespace) -> None:
    """Inputs: photos or inversion files, not both; flags that need photos are refused with latents."""
    latents = getattr(args, "from_latents", None)
    if latents and args.inputs:
        raise InputError("give either images or --from-latents, not both")
    if not latents and not args.inputs:
        raise InputError("no inputs: give image files, folders or globs"
                         + (" (or --from-latents FILE_OR_FOLDER)" if hasattr(args, "from_latents") else ""))
    if latents and args.align:
        raise InputError("--align needs photos; saved inversions are already aligned")


# ------------------------------------------------------------------ files
def latent_items(specs: list[str]) -> list[Item]:
    """Inversion files from files and folders (a folder's ``*.safetensors``, sorted)."""
    return items_for(files_in(specs, ".safetensors", "inversion"))


def latent_batches(items: list[Item], size: int, model, failures: list[str], bar: tqdm,
                   ) -> Iterator[tuple[Inversion, list[Unit]]]:
    """Batches of saved inversions; unreadable files or files of another model are reported and skipped."""
    parts: list[Inversion] = []
    units: list[Unit] = []
    for item in items:
        try:
            inversion = Inversion.load(item.path, device=model.device)
            model.check_compatible(inversion)
        except (InversionFileError, IncompatibleModelError) as error:
            message = str(error) if str(error).startswith(str(item.path)) else f"{item.path}: {error}"
            failures.append(message)
            tqdm.write(f"skipped: {message}", file=sys.stderr)
            bar.update(1)
            continue
        names = [item.name] if len(inversion) == 1 else [f"{item.name}_{k}" for k in range(len(inversion))]
        parts.append(inversion)
        units += [Unit(name, item.path, None) for name in names]
        if len(units) >= size:
            yield Inversion.cat(parts), units
            parts, units = [], []
    if parts:
        yield Inversion.cat(parts), units


def invert_outputs(name: str, args: argparse.Namespace) -> list[str]:
    """The files ``sdic invert`` writes for one picture; the inversion file last (the completion mark)."""
    names = [f"{name}.png"]
    if args.save_intermediate:
        names += [f"{name}_e4e.png", f"{name}_discrepancy.png"]
    return names + [f"{name}.safetensors"]


def can_resume(args: argparse.Namespace) -> bool:
    """Only inversion files say which model and input made them, so only they allow skipping."""
    return args.command == "invert" and args.save_latents == "safetensors" and not args.align


def finished(item: Item, args: argparse.Namespace, digest: str) -> bool:
    """All outputs exist, and the inversion file records this model and this input's bytes."""
    paths = [args.output / name for name in invert_outputs(item.name, args)]
    if not all(path.is_file() for path in paths):
        return False
    try:
        metadata = read_metadata(paths[-1])
        sha = json.loads(metadata.get("source_sha256", "null"))
    except (InversionFileError, json.JSONDecodeError):
        return False
    return metadata.get("model_digest") == digest and bool(sha) and sha[0] == file_sha256(item.path)


def remove_leftovers(item: Item, args: argparse.Namespace) -> None:
    """Delete the temporary files a killed run left for an image this process is about to redo."""
    for name in invert_outputs(item.name, args):
        for stale in args.output.glob(f".{name}.tmp*"):  # files.temporary_name
            stale.unlink(missing_ok=True)


# -------------------------------------------------------------- the run
def start(args: argparse.Namespace) -> DistContext:
    """Join torchrun's process group when there is one (gloo on CPU, nccl on CUDA).

    On one process the device stays what ``--device`` says (``sdic.load`` checks it).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return DistContext()
    return setup(args.device)


def device_for(ctx: DistContext, args: argparse.Namespace) -> str:
    """``--device`` on one process; under torchrun, a process's own GPU (cuda:LOCAL_RANK)."""
    return str(ctx.device) if ctx.distributed else args.device


def stop(ctx: DistContext) -> None:
    cleanup(ctx)


@dataclass
class Run:
    """This process's share of a run and what became of each of its files."""

    ctx: DistContext
    shard: Shard
    output: Path
    records: dict[Path, dict] = field(default_factory=dict)

    def share(self, items: list[Item]) -> list[Item]:
        return items[self.shard.index:: self.shard.count][self.ctx.rank:: self.ctx.world_size]

    def mark(self, item: Item, status: str, output: str | None = None, error: str | None = None) -> None:
        record = {"file": str(item.path), "output": output, "status": status}
        if error:
            record["error"] = error
        self.records[item.path] = record

    def settle(self, todo: list[Item], done: set[Path], failures: list[str], output_of) -> None:
        """Record the files of this process that were written or failed."""
        for item in todo:
            if item.path in done:
                self.mark(item, "written", output_of(item))
            else:
                error = next((f for f in failures if f.startswith(str(item.path))), "not processed")
                self.mark(item, "failed", error=error)

    def finish(self, items: list[Item]) -> list[dict]:
        """Every process's records in input order; rank 0 writes the index."""
        merged: dict[str, dict] = {}
        for part in gather_objects(list(self.records.values()), self.ctx):
            merged.update({record["file"]: record for record in part})
        ordered = [merged[str(item.path)] for item in items if str(item.path) in merged]
        if self.ctx.is_main:
            name = "index.jsonl" if self.shard.count == 1 else \
                f"index-{self.shard.index}-of-{self.shard.count}.jsonl"
            text = "".join(json.dumps(record) + "\n" for record in ordered)
            atomic_write(self.output / name, lambda tmp: tmp.write_text(text), durable=False)
        return ordered
