#!/usr/bin/env python
"""Detection rate of dlib's HOG frontal face detector on a built dataset (optional check).

    pip install dlib-bin
    python tools/faces_dataset/dlib_check.py DATA/faces128_heldout --n 100 [--upsample 1]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def detect_rate(paths: list[Path], upsample: int) -> dict:
    """Fraction of images with >= 1 detection, plus mean box size relative to the image."""
    try:
        import dlib
    except ImportError:
        raise SystemExit("dlib is missing: `pip install dlib-bin` (prebuilt wheel)") from None
    detector = dlib.get_frontal_face_detector()
    hits, rel_sizes = 0, []
    for p in paths:
        img = np.asarray(Image.open(p).convert("RGB"))
        boxes = detector(img, upsample)
        if len(boxes):
            hits += 1
            rel_sizes.append(max(boxes[0].width(), boxes[0].height()) / img.shape[0])
    return {"images": len(paths), "detected": hits, "rate": hits / max(len(paths), 1),
            "upsample": upsample, "mean_box_rel_size": float(np.mean(rel_sizes)) if rel_sizes else None,
            "dlib_version": dlib.__version__}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", type=Path)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--upsample", type=int, default=1, help="dlib upsampling passes (1 finds faces >= ~40 px)")
    args = p.parse_args(argv)
    paths = sorted((args.dataset / "images").glob("*.png"))[: args.n]
    if not paths:
        print(f"error: no images in {args.dataset / 'images'}", file=sys.stderr)
        return 2
    print(json.dumps(detect_rate(paths, args.upsample)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
