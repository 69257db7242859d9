"""Dataset-scale inversion: images per second at 1 and 2 processes, and memory over a long run.

Both modes run the command a user runs on a folder of photos, with the bundled
64x64 model, on synthetic 64x64 photos (seeded noise; the cost of an inversion
does not depend on the content):

    sdic invert default PHOTOS/ -o OUT --save-latents safetensors --batch-size B

``throughput`` times it (wall clock of the whole command, load included) as one
process with 1 thread (the baseline), one process with 2 threads, and
``torchrun --nproc_per_node 2`` with 1 thread per process; the three are run
interleaved, ``--repeats`` times, and the medians and the ratios against the
baseline of the same run are printed. ``memory`` inverts ``--images`` photos
(10,000 by default) in one process and samples its resident memory (VmRSS)
against the number of images written, to show that it stays flat (``--max-seconds``
stops it earlier on a slow or busy machine and reports the images done).

    python -m benchmarks.bench_dataset throughput --images 240 --repeats 3
    python -m benchmarks.bench_dataset memory --images 10000 --json rss.json

(run from the repository root; the photos and outputs go to a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.bench_inference import machine


def make_photos(folder: Path, count: int, size: int = 64) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{k:06d}.png")
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(photos: Path, out: Path, batch: int, processes: int) -> list[str]:
    cli = ["-m", "sdic.cli.main", "invert", "default", str(photos), "-o", str(out),
           "--save-latents", "safetensors", "--batch-size", str(batch)]
    if processes == 1:
        return [sys.executable, *cli]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}", "--nnodes=1",
            "--master_addr=127.0.0.1", f"--master_port={_free_port()}", *cli]


def environment(threads: int) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env


CONFIGS = {"1 process, 1 thread": (1, 1), "1 process, 2 threads": (1, 2), "2 processes, 1 thread each": (2, 1)}


def throughput(args: argparse.Namespace, work: Path) -> dict:
    photos = make_photos(work / "photos", args.images)
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for repeat in range(args.repeats):
        for name, (processes, threads) in CONFIGS.items():
            out = work / f"out-{repeat}-{processes}-{threads}"
            start = time.perf_counter()
            subprocess.run(command(photos, out, args.batch_size, processes), env=environment(threads), check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
            assert len(list(out.glob("*.safetensors"))) == args.images
    base = statistics.median(times["1 process, 1 thread"])
    rows = {name: {"median_s": statistics.median(t), "images_per_s": args.images / statistics.median(t),
                   "speedup_vs_baseline": base / statistics.median(t), "runs_s": t} for name, t in times.items()}
    return {"machine": machine(), "images": args.images, "batch_size": args.batch_size, "results": rows}


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def memory(args: argparse.Namespace, work: Path) -> dict:
    photos = make_photos(work / "photos", args.images)
    out = work / "out"
    out.mkdir()
    process = subprocess.Popen(command(photos, out, args.batch_size, 1), env=environment(args.threads),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = []
    start = time.perf_counter()
    log = open(args.log, "w") if args.log else None  # samples as they come (for runs that are cut short)
    while process.poll() is None:
        rss = _rss_mb(process.pid)
        done = sum(1 for name in os.listdir(out) if name.endswith(".safetensors"))
        if rss is not None:
            samples.append({"s": round(time.perf_counter() - start, 1), "images": done, "rss_mb": round(rss, 1)})
            if log:
                log.write(json.dumps(samples[-1]) + "\n")
                log.flush()
        if args.max_seconds and time.perf_counter() - start > args.max_seconds:
            process.terminate()  # the time budget is over: report what was measured
            process.wait()
            break
        time.sleep(args.interval)
    assert process.returncode == 0 or args.max_seconds
    seconds = time.perf_counter() - start
    total = samples[-1]["images"]
    working = [s for s in samples if s["images"] >= args.batch_size]  # after the first batch
    checkpoints = {}
    for fraction in (0.1, 0.25, 0.5, 0.75, 1.0):
        target = fraction * total
        near = min(working, key=lambda s: abs(s["images"] - target))
        checkpoints[f"{int(fraction * 100)}%"] = near
    second_half = [s for s in working if s["images"] >= total / 2]
    slope = np.polyfit([s["images"] for s in second_half], [s["rss_mb"] for s in second_half], 1)[0] * 1000
    return {"machine": machine(), "images": total, "of": args.images, "batch_size": args.batch_size,
            "threads": args.threads, "seconds": round(seconds, 1), "images_per_s": round(total / seconds, 2),
            "rss_at": checkpoints, "rss_max_mb": max(s["rss_mb"] for s in working),
            "rss_min_mb": min(s["rss_mb"] for s in working),
            "slope_mb_per_1000_images_second_half": round(float(slope), 3), "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("throughput", "memory"))
    parser.add_argument("--images", type=int, default=None, help="throughput: 240; memory: 10000")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="memory mode: threads of the process")
    parser.add_argument("--interval", type=float, default=2.0, help="memory mode: seconds between samples")
    parser.add_argument("--max-seconds", type=float, default=0,
                        help="memory mode: stop after this long and report the images done so far")
    parser.add_argument("--log", type=Path, help="memory mode: write every sample here as it is taken")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    args.images = args.images or (240 if args.mode == "throughput" else 10000)
    with tempfile.TemporaryDirectory(prefix="sdic-bench-dataset-") as tmp:
        result = (throughput if args.mode == "throughput" else memory)(args, Path(tmp))
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
