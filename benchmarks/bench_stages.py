"""Where an inversion's time goes: seconds per image in each network, by batch size.

Runs the stages of ``SDICModel.forward`` one by one (e4e, generator to the tap,
generator from the tap, DIPN, DICN, the second generator pass) on the
1024x1024 faces model with stand-in weights, batch sizes interleaved. Reports
the fastest of the repeats, per image, beside the median, so that small
differences between batch sizes can be told apart from the machine's noise.

    python -m benchmarks.bench_stages                  # fp32, batch 1/4/8
    python -m benchmarks.bench_stages --precision bf16

(run from the repository root).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from benchmarks.bench_inference import checkpoint_path, face_batch, machine

STAGES = ("e4e", "to_tap", "from_tap", "dipn", "dicn", "second_pass")


def run_stages(model, x: torch.Tensor, precision: str) -> dict[str, float]:
    """Seconds spent in each stage of one inversion of the batch ``x``."""
    from sdic.model import precision_context

    times: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[name] = now - clock
        clock = now

    with torch.no_grad(), precision_context(precision, x.device):
        codes = model.encode(x)
        lap("e4e")
        state = model.generator.to_tap(codes)
        lap("to_tap")
        initial = model.generator.from_tap(codes, state.feature, state.skip)
        lap("from_tap")
        photo, recon = model.reconstruction_for_dipn(initial, x)
        discrepancy = model.dipn(photo, recon)
        lap("dipn")
        feature, latents = model.dicn(discrepancy, state.feature, codes)
        lap("dicn")
        model.generator(latents, None, tap_feature=feature)
        lap("second_pass")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "sdic-bench"))
    parser.add_argument("--glibc-defaults", action="store_true",
                        help="leave the allocator as it is (the CLI applies sdic.runtime.keep_freed_memory)")
    args = parser.parse_args()
    if not args.glibc_defaults:
        from sdic.runtime import keep_freed_memory

        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    import sdic

    model = sdic.load(checkpoint_path(Path(args.cache)))
    batches = [int(b) for b in args.batches.split(",")]
    inputs = {b: face_batch(b) for b in batches}
    for b in batches:  # warm-up
        run_stages(model, inputs[b], args.precision)
    runs: dict[int, list[dict[str, float]]] = {b: [] for b in batches}
    for _ in range(args.repeats):
        for b in batches:
            runs[b].append(run_stages(model, inputs[b], args.precision))

    info = machine()
    print(f"Machine: {info['cpu']}, {info['cores']} CPUs ({info.get('isa', '')}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.precision}; "
          f"allocator {'glibc defaults' if args.glibc_defaults else 'keep_freed_memory'}; {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print("seconds per image: fastest of", args.repeats, "(median)")
    print("| batch | " + " | ".join(STAGES) + " | total |")
    print("| ---: |" + " ---: |" * (len(STAGES) + 1))
    for b in batches:
        cells = []
        for stage in (*STAGES, "total"):
            values = [sum(r.values()) if stage == "total" else r[stage] for r in runs[b]]
            cells.append(f"{min(values) / b:.3f} ({statistics.median(values) / b:.3f})")
        print(f"| {b} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
