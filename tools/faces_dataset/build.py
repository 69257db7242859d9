#!/usr/bin/env python
"""Build a deterministic synthetic cartoon-face dataset with facesjs + cairosvg.

    python tools/faces_dataset/build.py --seed 0 --count 30000 --size 128 --out DATA/faces128

Writes OUT/images/000000.png ..., OUT/labels.csv (numeric attributes, one row
per image), OUT/faces.jsonl (the raw facesjs face objects) and OUT/meta.json
(seed, count, size, versions, attribute dictionary). Face i depends only on
(seed, i), so re-running skips finished PNGs (resume) and a larger --count
extends a dataset with the same first faces. Setup: see docs/dataset.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from multiprocessing import get_context
from pathlib import Path

from . import face_attributes as attributes

HERE = Path(__file__).resolve().parent

GENERATOR = HERE / "generate.mjs"
BATCH = 512  # faces per render batch (bounds memory)
FORMAT_VERSION = 1


class SetupError(RuntimeError):
    """A missing tool or package, with instructions to install it."""


def check_node() -> str:
    """Path of `node`, after checking facesjs is installed next to generate.mjs."""
    node = shutil.which("node")
    if node is None:
        raise SetupError("`node` not found. Install Node.js >= 18 (Debian: `apt-get install nodejs npm`), "
                         f"then run `npm ci` in {HERE}.")
    if not (HERE / "node_modules" / "facesjs" / "package.json").is_file():
        raise SetupError(f"facesjs is not installed. Run `npm ci` in {HERE} (needs npm).")
    return node


def check_cairosvg():
    """Import cairosvg or explain how to get it and libcairo."""
    try:
        import cairosvg
    except ImportError as err:
        raise SetupError("cairosvg is missing: `pip install cairosvg`. If it then fails to load "
                         f"libcairo, install it: `apt-get install libcairo2`. ({err})") from err
    except OSError as err:
        raise SetupError(f"cairosvg cannot load libcairo: `apt-get install libcairo2`. ({err})") from err
    return cairosvg


def node_vocab(node: str) -> dict:
    """facesjs version, crop box, feature ids and palettes from generate.mjs --vocab."""
    out = subprocess.run([node, str(GENERATOR), "--vocab"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"generate.mjs --vocab failed:\n{out.stderr}")
    return json.loads(out.stdout)


def stream_faces(node: str, seed: int, count: int):
    """Yield generate.mjs records for faces 0..count-1 from one node process."""
    cmd = [node, str(GENERATOR), "--seed", str(seed), "--start", "0", "--count", str(count)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1 << 20)
    try:
        for line in proc.stdout:
            yield json.loads(line)
    finally:
        proc.stdout.close()
        err = proc.stderr.read()
        if proc.wait() != 0:
            raise RuntimeError(f"generate.mjs failed (exit {proc.returncode}):\n{err}")


def render_png(svg: str, size: int, supersample: int = 1) -> bytes:
    """Render a framed face SVG to RGB PNG bytes of size x size."""
    import cairosvg

    big = size * supersample
    png = cairosvg.svg2png(bytestring=svg.encode("utf-8"), output_width=big, output_height=big)
    # cairo writes an opaque surface as colour type 2 (RGB); re-encode only if not.
    if supersample == 1 and png[25] == 2:
        return png
    return _to_rgb_png(png, size)


def _to_rgb_png(png: bytes, size: int) -> bytes:
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file + rename so an interrupted run never leaves a partial file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _render_task(task) -> None:
    svg, size, supersample, path = task
    write_atomic(Path(path), render_png(svg, size, supersample))


def image_path(out: Path, index: int) -> Path:
    return out / "images" / f"{index:06d}.png"


def check_existing(out: Path, seed: int, size: int, supersample: int, version: str) -> None:
    """Refuse to mix datasets: an existing meta.json must match seed/size/supersample/facesjs."""
    meta_path = out / "meta.json"
    if not meta_path.is_file():
        return
    old = json.loads(meta_path.read_text())
    want = {"seed": seed, "size": size, "supersample": supersample, "facesjs_version": version}
    diff = {k: (old.get(k), v) for k, v in want.items() if old.get(k) != v}
    if diff:
        raise SetupError(f"{out} holds a different dataset {diff} (old, new); use another --out.")


class Renderer:
    """Renders batches of records whose PNG is missing, overlapping one batch with parsing."""

    def __init__(self, out: Path, size: int, supersample: int, workers: int):
        self.out, self.size, self.supersample, self.workers = out, size, supersample, workers
        self.pool = get_context("fork").Pool(workers) if workers > 1 else None
        self.pending, self.rendered = None, 0

    def submit(self, batch: list) -> None:
        """Queue a batch (waits for the previous one first)."""
        tasks = [(r["svg"], self.size, self.supersample, str(image_path(self.out, r["index"])))
                 for r in batch if not image_path(self.out, r["index"]).is_file()]
        self.wait()
        if self.pool is None:
            for t in tasks:
                _render_task(t)
        else:
            chunk = max(1, len(tasks) // (4 * self.workers))
            self.pending = self.pool.map_async(_render_task, tasks, chunksize=chunk)
        self.rendered += len(tasks)

    def wait(self) -> None:
        if self.pending is not None:
            self.pending.get()  # re-raises a worker's exception
            self.pending = None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


def build(seed: int, count: int, size: int, out: Path, workers: int = 2, supersample: int = 1,
          quiet: bool = False) -> dict:
    """Build (or resume) the dataset in `out`; returns the meta dict written to meta.json."""
    node = check_node()
    check_cairosvg()
    vocab = node_vocab(node)
    check_existing(out, seed, size, supersample, vocab["facesjs_version"])
    (out / "images").mkdir(parents=True, exist_ok=True)
    # Provisional meta.json so an interrupted run is still guarded by check_existing.
    (out / "meta.json").write_text(json.dumps({"complete": False, "seed": seed, "size": size,
                                               "supersample": supersample,
                                               "facesjs_version": vocab["facesjs_version"]}) + "\n")
    labels_tmp, faces_tmp = out / "labels.csv.tmp", out / "faces.jsonl.tmp"

    t0, columns = time.time(), None
    renderer = Renderer(out, size, supersample, workers)
    try:
        with open(labels_tmp, "w", newline="") as lf, open(faces_tmp, "w") as ff:
            writer, batch = None, []
            for rec in stream_faces(node, seed, count):
                row = {"file": f"images/{rec['index']:06d}.png", **attributes.encode(rec, vocab)}
                if writer is None:
                    columns = list(row)
                    writer = csv.DictWriter(lf, fieldnames=columns, lineterminator="\n")
                    writer.writeheader()
                writer.writerow(row)
                ff.write(json.dumps({"index": rec["index"], "face": rec["face"], "bg": rec["bg"]},
                                    separators=(",", ":")) + "\n")
                batch.append(rec)
                if len(batch) == BATCH:
                    renderer.submit(batch)
                    batch = []
                    _progress(quiet, rec["index"] + 1, count, renderer.rendered, t0)
            renderer.submit(batch)
            renderer.wait()
    finally:
        renderer.close()
    rendered = renderer.rendered
    os.replace(labels_tmp, out / "labels.csv")
    os.replace(faces_tmp, out / "faces.jsonl")
    elapsed = time.time() - t0
    meta = make_meta(seed, count, size, supersample, vocab, columns or [], out, rendered, elapsed, workers)
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    _progress(quiet, count, count, rendered, t0)
    return meta


def _progress(quiet: bool, done: int, count: int, rendered: int, t0: float) -> None:
    if not quiet:
        dt = time.time() - t0
        print(f"{done}/{count} faces, {rendered} rendered, {dt:.0f}s, "
              f"{rendered / max(dt, 1e-9):.1f} rendered/s", file=sys.stderr, flush=True)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_meta(seed, count, size, supersample, vocab, columns, out, rendered, elapsed, workers) -> dict:
    """meta.json content: parameters, versions, framing, attribute dictionary, last-run timing."""
    import cairosvg

    dictionary = attributes.dictionary(vocab)
    missing = [c for c in columns if c != "file" and c not in dictionary]
    if missing:
        raise RuntimeError(f"undocumented label columns: {missing}")
    return {
        "complete": True,
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "count": count,
        "size": size,
        "supersample": supersample,
        "facesjs_version": vocab["facesjs_version"],
        "cairosvg_version": cairosvg.__version__,
        "cairo_version": _cairo_version(),
        "crop_viewbox_400x600": vocab["crop"],
        "framing": "FFHQ-style crop around facesjs' fixed eye/mouth anchors, identical for every face",
        "background": "plain per-face colour, HSL hue U[0,360), saturation U[0,0.25), lightness U[0.78,0.92); "
                      "stored as bg_r/bg_g/bg_b",
        "files": {"images": "images/{index:06d}.png (RGB)", "labels": "labels.csv", "faces": "faces.jsonl"},
        "labels_sha256": sha256(out / "labels.csv"),
        "columns": columns,
        "attributes": {c: dictionary[c] for c in columns if c != "file"},
        "last_run": {"rendered": rendered, "seconds": round(elapsed, 1), "workers": workers,
                     "rendered_per_second": round(rendered / max(elapsed, 1e-9), 1),
                     "python": platform.python_version()},
    }


def _cairo_version() -> str:
    try:
        import cairocffi
        return cairocffi.cairo_version_string()
    except (ImportError, OSError, AttributeError):  # informational only
        return "unknown"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--count", type=int, required=True, help="number of faces")
    p.add_argument("--size", type=int, default=128, help="square image size in pixels (default 128)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--workers", type=int, default=2, help="render processes (default 2)")
    p.add_argument("--supersample", type=int, default=1,
                   help="render at size*K then downsample with Lanczos (default 1: cairo antialiasing)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    args = p.parse_args(argv)
    for name in ("count", "size", "workers", "supersample"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.seed < 0 or args.seed >= 2**32:
        p.error("--seed must be in [0, 2**32)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        meta = build(args.seed, args.count, args.size, args.out, args.workers, args.supersample, args.quiet)
    except SetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(meta["last_run"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
