"""What this machine's convolutions can do: the ceiling for SDIC inference.

Times one 512->512 3x3 convolution at 64x64 (the generator's and e4e's
workhorse shape) in fp32 and bf16, contiguous and channels-last, and turns the
best rate into a lower bound on the time per inversion: an inversion is about
587 GFLOP (e4e 145, generator 151 per pass and two passes, DIPN 78, DICN 63;
counted per layer), so no implementation can beat ``587 / rate`` seconds.

    python -m benchmarks.bench_conv_peak
    python -m benchmarks.bench_conv_peak --write docs/performance.md

(run from the repository root).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.bench_inference import machine, write_docs

GFLOP_PER_INVERSION = 587.0


def conv_rate(dtype: torch.dtype, channels_last: bool, repeats: int = 7) -> float:
    """Median GFLOP/s of a [1, 512, 64, 64] x [512, 512, 3, 3] convolution."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 512, 64, 64, generator=g).to(dtype)
    w = torch.randn(512, 512, 3, 3, generator=g).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    flop = 2 * 512 * 512 * 9 * 64 * 64
    times = []
    with torch.no_grad():
        for i in range(repeats + 2):
            start = time.perf_counter()
            F.conv2d(x, w, padding=1)
            if i >= 2:  # the first calls build the oneDNN kernels
                times.append(time.perf_counter() - start)
    return flop / statistics.median(times) / 1e9


def report(threads: int) -> str:
    info = machine()
    rows = []
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        contiguous, channels_last = conv_rate(dtype, False), conv_rate(dtype, True)
        best = max(contiguous, channels_last)
        rows.append(f"| {name} | {contiguous:.0f} | {channels_last:.0f} | {GFLOP_PER_INVERSION / best:.2f} |")
    return "\n".join([
        f"Machine: {info['cpu']}, {info['cores']} CPUs ({info.get('isa', '')}); "
        f"torch {torch.__version__}, {threads} threads; {time.strftime('%Y-%m-%d %H:%M %Z')}",
        "Command: `python -m benchmarks.bench_conv_peak`",
        "",
        "| precision | GFLOP/s contiguous | GFLOP/s channels-last | inversion at that rate (s) |",
        "| --- | ---: | ---: | ---: |",
        *rows,
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--write", default="", help="also write the table into this markdown file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    text = report(torch.get_num_threads())
    print(text)
    if args.write:
        write_docs(Path(args.write), text, name="peak")


if __name__ == "__main__":
    main()
