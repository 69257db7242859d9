"""tools/faces_dataset: determinism, resume, labels (needs node, `npm ci` and cairosvg: install.sh)."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from tools.faces_dataset import build
from tools.faces_dataset import face_attributes as attrs

TOOL = Path(__file__).resolve().parents[1] / "tools" / "faces_dataset"


def _ready() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (TOOL / "node_modules" / "facesjs").is_dir():
        return f"facesjs is not installed (run `npm ci --prefix {TOOL}`, as install.sh does)"
    if importlib.util.find_spec("cairosvg") is None:
        return "cairosvg is not installed (pip install cairosvg)"
    return None


def _digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((out / "images").glob("*.png")) + [out / "labels.csv", out / "faces.jsonl"]:
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_hex_and_luma():
    assert attrs.hex_to_rgb("#ff8000") == (255, 128, 0)
    assert attrs.luma((255, 255, 255)) == 1.0
    with pytest.raises(ValueError):
        attrs.hex_to_rgb("red")


@pytest.fixture(scope="module")
def builder():
    problem = _ready()
    assert problem is None, problem
    return build


def test_deterministic_resumable_extendable(builder, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    meta = builder.build(7, 6, 32, a, workers=1, quiet=True)
    builder.build(7, 6, 32, b, workers=2, quiet=True)
    assert _digest(a) == _digest(b)  # same seed -> same bytes, whatever the worker count

    (b / "images" / "000003.png").unlink()  # resume re-renders only the missing face
    assert builder.build(7, 6, 32, b, workers=1, quiet=True)["last_run"]["rendered"] == 1
    assert _digest(a) == _digest(b)

    builder.build(7, 8, 32, c, workers=1, quiet=True)  # a larger count keeps the first faces
    for i in range(6):
        name = f"images/{i:06d}.png"
        assert (a / name).read_bytes() == (c / name).read_bytes()

    assert meta["seed"] == 7 and meta["size"] == 32 and meta["complete"]
    assert json.loads((a / "meta.json").read_text())["labels_sha256"] == meta["labels_sha256"]


def test_labels_and_images(builder, tmp_path):
    from PIL import Image

    meta = builder.build(0, 5, 48, tmp_path, workers=1, quiet=True)
    with open(tmp_path / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == [f"images/{i:06d}.png" for i in range(5)]
    for row in rows:
        for col, value in row.items():
            if col != "file":
                float(value)  # every attribute is numeric
                spec = meta["attributes"][col]
                if spec["type"] == "category":
                    assert 0 <= int(value) < len(spec["categories"]), col
                if spec["type"] == "binary":
                    assert value in ("0", "1"), col
        img = Image.open(tmp_path / row["file"])
        assert img.mode == "RGB" and img.size == (48, 48)
        assert img.getpixel((0, 0)) == (int(row["bg_r"]), int(row["bg_g"]), int(row["bg_b"]))


def test_other_seed_is_refused(builder, tmp_path):
    builder.build(0, 2, 32, tmp_path, workers=1, quiet=True)
    with pytest.raises(builder.SetupError):
        builder.build(1, 2, 32, tmp_path, workers=1, quiet=True)
