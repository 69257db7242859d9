"""What the input and output checks cost: reading an image and writing a result.

Reading: ``sdic.images.load_image`` (path checks, EXIF orientation, animated-image and
16-bit/float handling) against the plain Pillow read it replaced (``Image.open`` +
``convert("RGB")``), on the same JPEG photo and PNG face. Writing: a result PNG through
``OutputFolder.save`` (temporary file, rename, name claim) against ``Image.save`` into
the folder. Medians of interleaved repeats, and the ratio to the baseline of the same run.

    python -m benchmarks.bench_image_io            # (from the repository root)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.bench_inference import machine


def _baseline_read(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


def _timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def _files(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (1024, 1536, 3), dtype=np.uint8))
    photo.save(folder / "photo.jpg", quality=90)
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(folder / "face.png")
    return {"jpeg 1536x1024": folder / "photo.jpg", "png 256x256": folder / "face.png"}


def bench_reads(files: dict[str, Path], repeats: int) -> dict[str, dict[str, float]]:
    from sdic.images import load_image

    results = {}
    for label, path in files.items():
        base, ours = [], []
        for _ in range(repeats):  # interleaved, so drifts of a shared machine hit both
            base.append(_timed(_baseline_read, path))
            ours.append(_timed(load_image, path))
        results[label] = _summary(base, ours)
    return results


def bench_writes(folder: Path, repeats: int) -> dict[str, float]:
    from sdic.outputs import OutputFolder

    picture = Image.fromarray(np.random.default_rng(1).integers(0, 255, (1024, 1024, 3), dtype=np.uint8))
    base, ours = [], []
    with OutputFolder(folder / "out", note=lambda line: None) as out:
        for k in range(repeats):
            base.append(_timed(picture.save, folder / "out" / f"plain_{k}.png"))
            ours.append(_timed(out.save, f"result_{k}.png", lambda p: picture.save(p, format="PNG"), f"s{k}"))
    return _summary(base, ours)


def _summary(base: list[float], ours: list[float]) -> dict[str, float]:
    b, o = statistics.median(base), statistics.median(ours)
    return {"baseline_ms": round(b * 1e3, 3), "sdic_ms": round(o * 1e3, 3), "ratio": round(o / b, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        report = {"machine": machine(), "repeats": args.repeats,
                  "read": bench_reads(_files(folder), args.repeats),
                  "write png 1024x1024": bench_writes(folder, max(5, args.repeats // 3))}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
