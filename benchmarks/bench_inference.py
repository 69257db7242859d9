"""Inference benchmark: SDIC inversion and editing against the authors' formulation.

Runs the 1024x1024 faces model with stand-in weights (regenerated from the
manifest in tests/data/reference, saved as an authors' checkpoint) and prints,
for fp32 and bf16 at batch 1/4/8:

* median seconds per image and images per second (``model.invert``),
* the ratio against the reference-semantics baseline (``reference_ops.py``:
  the authors' operations, fp32, batch 1) timed in the same process,
  interleaved with our runs (the machine is shared, so only ratios measured
  side by side mean something); each precision is timed in a process of its
  own, as a user runs one (mixing precisions and the baseline's very large
  temporaries in one process changes what the allocator hands back),
* peak resident memory of a fresh subprocess that loads the checkpoint and
  runs one inversion in that configuration,

plus the cost of ``model.edit(inv, "age", 3)`` relative to an inversion, the
load + first-inference time of a fresh process, and the bf16-vs-fp32 PSNR.

    python -m benchmarks.bench_inference            # full table (~10 min)
    python -m benchmarks.bench_inference --quick    # batch 1 only, < 3 min
    python -m benchmarks.bench_inference --write docs/performance.md

(run from the repository root).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "reference"


def _peak_rss_mb() -> float:
    """Peak resident set of this process image (VmHWM; ``ru_maxrss`` would include the
    forking parent's peak, which Linux carries over exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def checkpoint_path(cache: Path) -> Path:
    """The stand-in authors' checkpoint (seed 0, as the parity data), built once."""
    import torch

    from sdic.testing import authors_checkpoint, read_manifest

    path = cache / "sdic_ffhq_seed0_standin.pt"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        manifest = read_manifest(REFERENCE / "sdic_ffhq_manifest.json")
        state = authors_checkpoint(manifest, 0, {"dataset_type": "ffhq_encode", "stylegan_size": 1024})
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
    return path


def face_batch(batch: int):
    """The parity input (an aligned face, 256x256 in [-1, 1]), repeated to ``batch``."""
    import numpy as np
    import torch

    image = torch.from_numpy(np.load(REFERENCE / "ref_ffhq_seed0_astronaut_inversion.npz")["input"])
    return image[None].repeat(batch, 1, 1, 1).contiguous()


def machine() -> dict[str, str]:
    info = {"cpu": platform.processor() or "?", "cores": str(os.cpu_count())}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["cpu"] = fields.get("Model name", info["cpu"])
        info["cores"] = fields.get("CPU(s)", info["cores"])
        flags = fields.get("Flags", "").split()
        info["isa"] = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
    except (OSError, subprocess.CalledProcessError, ValueError):
        pass
    return info


# ----------------------------------------------------------- child process
def child(args: argparse.Namespace) -> None:
    """Fresh process: import, load, one inversion; report times and peak RSS as JSON."""
    start = time.perf_counter()
    _setup_child(args.threads)
    import sdic

    imported = time.perf_counter()
    model = sdic.load(args.checkpoint)
    loaded = time.perf_counter()
    x = face_batch(args.batch)
    model.invert(x, precision=args.precision)
    done = time.perf_counter()
    print(json.dumps({
        "import": imported - start, "load": loaded - imported, "first_inference": done - loaded,
        "peak_rss_mb": _peak_rss_mb(),
    }))


def _setup_child(threads: int) -> None:
    """Thread count and allocator of a fresh benchmark process, as the command line sets them."""
    import torch

    from sdic.runtime import keep_freed_memory

    if threads:
        torch.set_num_threads(threads)
    keep_freed_memory()


def _run_json(mode: str, checkpoint: Path, threads: int, *options: str) -> dict:
    """Run this module in a fresh process in ``mode`` and return the JSON it prints last."""
    command = [sys.executable, "-m", "benchmarks.bench_inference", mode, "--checkpoint", str(checkpoint), *options]
    if threads:
        command += ["--threads", str(threads)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_child(checkpoint: Path, batch: int, precision: str, threads: int) -> dict:
    return _run_json("--child", checkpoint, threads, "--batch", str(batch), "--precision", precision)


# ------------------------------------------------------------- main process
def psnr(a, b) -> float:
    import torch

    a = (a.clamp(-1, 1) + 1) / 2
    b = (b.clamp(-1, 1) + 1) / 2
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean()))


def _timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def measure_in_process(model, reference_cls, batches, precision: str, repeats: int) -> dict:
    """Interleaved timings of the baseline and of ``precision`` at every batch size.

    Returns {"reference": [s], "ours": {batch: [s per image]}, "edit_ratio": [edit / inversion]}.
    """
    reference = reference_cls(model)
    inputs = {b: face_batch(b) for b in batches}
    # warm-up: the first calls build oneDNN kernels and the folded-weight caches
    inversion = model.invert(inputs[1], precision=precision)
    reference.invert(inputs[1])
    timings: dict = {"reference": [], "ours": {b: [] for b in batches}, "edit_ratio": []}
    for repeat in range(repeats):
        timings["reference"].append(_timed(reference.invert, inputs[1]))
        # a different batch size comes first after the baseline in every repeat, so
        # that none always runs in the state the baseline leaves behind
        shift = repeat % len(batches)
        for b in batches[shift:] + batches[:shift]:
            timings["ours"][b].append(_timed(model.invert, inputs[b], precision=precision) / b)
        edit = _timed(model.edit, inversion, "age", 3.0, precision=precision)
        timings["edit_ratio"].append(edit / timings["ours"][1][-1])
    return timings


def timing_child(args: argparse.Namespace) -> None:
    """Fresh process for one precision: the interleaved timings as JSON."""
    _setup_child(args.threads)
    import sdic
    from benchmarks.reference_ops import ReferenceSDIC

    batches = [int(b) for b in args.batches.split(",")]
    timings = measure_in_process(sdic.load(args.checkpoint), ReferenceSDIC, batches, args.precision, args.repeats)
    print(json.dumps(timings))


def run_timing_child(checkpoint: Path, precision: str, batches: list[int], repeats: int, threads: int) -> dict:
    timings = _run_json("--timing-child", checkpoint, threads, "--precision", precision,
                        "--batches", ",".join(map(str, batches)), "--repeats", str(repeats))
    timings["ours"] = {int(b): v for b, v in timings["ours"].items()}
    return timings


def bf16_quality(model) -> dict[str, float]:
    """PSNR of bf16 against fp32: inversion, initial image, age +3 edit."""
    x = face_batch(1)
    fp32, bf16 = model.invert(x, precision="fp32"), model.invert(x, precision="bf16")
    edit32 = model.edit(fp32, "age", 3.0)
    edit16 = model.edit(bf16, "age", 3.0, precision="bf16")
    return {"image": psnr(fp32.image, bf16.image), "initial_image": psnr(fp32.initial_image, bf16.initial_image),
            "edit": psnr(edit32.image, edit16.image)}


def main(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import sdic

    batches = [1] if args.quick else [1, 4, 8]
    precisions = ["fp32", "bf16"]
    repeats = args.repeats or (2 if args.quick else 6)
    checkpoint = checkpoint_path(Path(args.cache))
    load_before = os.getloadavg()

    # one process per precision (as a user runs one), each with its own interleaved baseline
    timings = {p: run_timing_child(checkpoint, p, batches, repeats, args.threads) for p in precisions}
    load_after = os.getloadavg()
    quality = bf16_quality(sdic.load(checkpoint))
    refs = {p: statistics.median(timings[p]["reference"]) for p in precisions}

    rss = {}
    for p in precisions:
        for b in batches:
            rss[(p, b)] = run_child(checkpoint, b, p, args.threads)

    rows = []
    for p in precisions:
        for b in batches:
            runs = timings[p]["ours"][b]
            t = statistics.median(runs)
            spread = f"{min(runs):.2f}-{max(runs):.2f}"
            rows.append((p, b, t, spread, 1.0 / t, t / refs[p], rss[(p, b)]["peak_rss_mb"] / 1024))
    startup = rss[("fp32", 1)]
    report = {
        "rows": rows, "reference_s_per_image": refs, "edit_ratio": statistics.median(timings["fp32"]["edit_ratio"]),
        "startup": startup, "psnr_bf16": quality, "threads": torch.get_num_threads(),
        "loadavg": (load_before, load_after), "repeats": repeats,
    }
    text = format_report(report, args)
    print(text)
    if args.write:
        write_docs(Path(args.write), text)


def format_report(r: dict, args: argparse.Namespace) -> str:
    info = machine()
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} CPUs ({info.get('isa', '')}); "
        f"torch {__import__('torch').__version__}, {r['threads']} threads",
        f"Command: `python -m benchmarks.bench_inference {' '.join(sys.argv[1:])}`".replace("  ", " "),
        f"Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; load average before/after "
        f"{r['loadavg'][0][0]:.1f}/{r['loadavg'][1][0]:.1f}; medians of {r['repeats']} interleaved runs, the order rotated each repeat",
        "",
        "Reference-semantics baseline (authors' operations, fp32, batch 1), timed in each precision's "
        "process: " + ", ".join(f"{s:.2f} s per image beside {p}" for p, s in r["reference_s_per_image"].items()),
        "",
        "| precision | batch | s / image | fastest-slowest run | images / s | ratio vs reference | peak RSS (GB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p, b, t, spread, ips, ratio, gb in r["rows"]:
        lines.append(f"| {p} | {b} | {t:.2f} | {spread} | {ips:.3f} | {ratio:.3f} | {gb:.2f} |")
    s = r["startup"]
    q = r["psnr_bf16"]
    lines += [
        "",
        f"- edit (`model.edit(inv, \"age\", 3)`) / inversion: {r['edit_ratio']:.3f} "
        f"(invert + edit = {1 + r['edit_ratio']:.2f} x invert)",
        f"- start-up (fresh process, fp32, batch 1): import {s['import']:.2f} s, load {s['load']:.2f} s, "
        f"first inversion {s['first_inference']:.2f} s; load + first inversion {s['load'] + s['first_inference']:.2f} s",
        f"- bf16 vs fp32 PSNR ([-1,1] mapped to [0,1]): image {q['image']:.1f} dB, "
        f"initial image {q['initial_image']:.1f} dB, age+3 edit {q['edit']:.1f} dB",
    ]
    return "\n".join(lines)


def write_docs(path: Path, text: str, name: str = "bench") -> None:
    """Put ``text`` between the ``<!-- {name}:begin/end -->`` markers of ``path`` (appended if absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{text}\n{end}"
    old = path.read_text() if path.exists() else "# Performance\n"
    if begin in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(new)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 1 only, 2 repeats (< 3 minutes)")
    parser.add_argument("--repeats", type=int, default=0, help="timed repeats per configuration")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "sdic-bench"),
                        help="where the stand-in checkpoint is kept")
    parser.add_argument("--write", default="", help="also write the table into this markdown file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", default="", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--timing-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batches", default="1", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.child:
        child(arguments)
    elif arguments.timing_child:
        timing_child(arguments)
    else:
        main(arguments)
