#!/usr/bin/env python
"""Contact sheet of the first N faces of a built dataset.

    python tools/faces_dataset/sheet.py DATA/faces128 --n 16 --cols 4 --out docs/img/faces_dataset_sample.png
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from PIL import Image


def contact_sheet(paths: list[Path], cols: int, pad: int = 2, fill=(255, 255, 255)) -> Image.Image:
    """Grid of equally sized images with `pad` pixels between them."""
    if not paths:
        raise ValueError("no images")
    tiles = [Image.open(p).convert("RGB") for p in paths]
    w, h = tiles[0].size
    rows = math.ceil(len(tiles) / cols)
    sheet = Image.new("RGB", (cols * w + (cols + 1) * pad, rows * h + (rows + 1) * pad), fill)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet.paste(tile, (pad + c * (w + pad), pad + r * (h + pad)))
    return sheet


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Contact sheet of a faces dataset")
    p.add_argument("dataset", type=Path, help="dataset directory (with images/)")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--start", type=int, default=0, help="first face index")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    paths = [args.dataset / "images" / f"{i:06d}.png" for i in range(args.start, args.start + args.n)]
    missing = [str(q) for q in paths if not q.is_file()]
    if missing:
        print(f"error: missing images, e.g. {missing[0]}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(paths, args.cols).save(args.out, optimize=True)
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
