"""What the safety checks cost, and what fp16 costs on a CPU.

1. The weight checks of ``sdic.load`` (dtypes and finite values of every tensor) on the
   1024x1024 faces stand-in checkpoint (309 M values, built as in ``bench_inference``):
   median seconds of the value check alone, against ``read_checkpoint`` and the whole
   ``sdic.load`` timed in the same process.
2. ``model.invert`` of one bundled sample with the bundled 64x64 model in fp32, bf16 and
   fp16 (autocast), interleaved; medians and the ratio to fp32.

    python -m benchmarks.bench_checks               # ~2-4 min on 2 cores
    python -m benchmarks.bench_checks --threads 2

(run from the repository root). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

from benchmarks.bench_inference import checkpoint_path, machine


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def weight_checks(cache: Path, repeats: int) -> dict[str, float]:
    """Median seconds: the value check over every tensor, reading the file, the whole load."""
    import sdic
    from sdic.checkpoints import read_checkpoint
    from sdic.checkpoints.building import _non_finite

    path = checkpoint_path(cache)
    tensors = [(k, v) for k, v in read_checkpoint(path).tensors.items() if v.is_floating_point()]
    check = _median_seconds(lambda: [_non_finite(k, v) for k, v in tensors], repeats)
    read = _median_seconds(lambda: read_checkpoint(path), max(1, repeats // 2))
    load = _median_seconds(lambda: sdic.load(path), max(1, repeats // 2))
    values = sum(v.numel() for _, v in tensors)
    return {"values_millions": values / 1e6, "value_check_s": check, "read_checkpoint_s": read, "load_s": load,
            "check_share_of_load": check / load}


def precisions(repeats: int) -> dict[str, dict[str, float]]:
    """Median seconds of one inversion per precision (interleaved rounds) and the ratio to fp32."""
    import sdic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fp16-on-CPU warning is the point of the measurement
        model = sdic.load("default")
    photo = model.prepare(Path(sdic.__file__).parent / "data" / "samples" / "000000.png")
    names = ("fp32", "bf16", "fp16")
    for name in names:  # warm-up
        model.invert(photo, precision=name)
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            start = time.perf_counter()
            model.invert(photo, precision=name)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {name: {"seconds": medians[name], "vs_fp32": medians[name] / medians["fp32"]} for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "sdic-bench",
                        help="stand-in checkpoint folder (shared with bench_inference)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(json.dumps({"machine": machine(), "threads": args.threads, "torch": torch.__version__,
                      "weight_checks": weight_checks(args.cache, args.repeats),
                      "precision_bundled_64": precisions(args.repeats)}, indent=2))


if __name__ == "__main__":
    main()
