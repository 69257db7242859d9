"""``sdic evaluate``: the table, the JSON, the grid, failures reported, e4e vs SDIC both scored."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import sdic
from sdic import evaluation
from sdic.cli.main import main


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (70, 70, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "bad.png").write_bytes(b"truncated")
    return folder


def test_evaluate_writes_table_json_and_grid(tiny_checkpoint, photos, tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(["evaluate", str(tiny_checkpoint), str(photos), "-o", str(out),
                 "--metrics", "mse", "psnr", "ssim", "lpips_alex", "--batch-size", "2"])
    assert code == 1  # one unreadable image
    assert "bad.png" in capsys.readouterr().err
    result = json.loads((out / "results.json").read_text())
    assert result["images"] == 3 and len(result["failures"]) == 1
    assert set(result["mean"]) == {"e4e", "sdic"}
    assert set(result["mean"]["sdic"]) == {"mse", "psnr", "ssim", "lpips_alex", "fid"}
    assert result["fid"]["e4e"] > 0
    table = (out / "results.md").read_text()
    assert "| e4e |" in table and "| sdic |" in table and "LPIPS-alex" in table
    grid = Image.open(out / "grid.png")
    assert grid.width == 4 * 64 * 4 and grid.height == 20 + 3 * 256


def test_scores_match_the_metric_functions(tiny_checkpoint):
    from sdic.metrics import mse, psnr

    model = sdic.load(tiny_checkpoint)
    inv = model.invert(torch.rand(2, 3, 64, 64) * 2 - 1)
    views = evaluation.scored_views(inv, model.config)
    assert views["sdic"].shape == views["target"].shape == (2, 3, 64, 64)
    rows = evaluation.score(views, {"mse": mse, "psnr": psnr})
    expected = ((views["e4e"].clamp(-1, 1) - views["target"]) ** 2).mean((1, 2, 3))
    assert rows[1]["e4e"]["mse"] == pytest.approx(float(expected[1]), rel=1e-5)
    assert rows[0]["sdic"]["psnr"] == pytest.approx(float(10 * torch.log10(4 / views["sdic"].clamp(-1, 1).sub(
        views["target"]).pow(2).mean((1, 2, 3))[0])), rel=1e-4)


def test_unknown_metric_is_a_usage_error(tiny_checkpoint, photos, tmp_path, capsys):
    assert main(["evaluate", str(tiny_checkpoint), str(photos), "-o", str(tmp_path / "e"),
                 "--metrics", "sharpness"]) == 2
    assert "unknown metrics ['sharpness']" in capsys.readouterr().err


def test_evaluate_returns_the_numbers_the_cli_writes(tiny_checkpoint, photos, tmp_path):
    model = sdic.load(tiny_checkpoint)
    settings = evaluation.EvaluationSettings(metrics=("mse", "psnr"), fid=False, batch_size=2, grid_rows=2)
    report = evaluation.evaluate(model, [photos], settings, progress=False)
    out = tmp_path / "eval"
    assert main(["evaluate", str(tiny_checkpoint), str(photos), "-o", str(out), "--metrics", "mse", "psnr",
                 "--no-fid", "--batch-size", "2", "--grid", "2"]) == 1
    written = json.loads((out / "results.json").read_text())
    assert written["per_image"] == report.per_image and written["mean"] == report.means()
    assert written["failures"] == report.failures and len(report.failures) == 1 and "bad.png" in report.failures[0]
    assert report.fid == {} and report.protocol["metrics"] == ["mse", "psnr"]
    assert report.grid.size == Image.open(out / "grid.png").size == (4 * 64 * 4, 20 + 2 * 256)
    # the means are the means of the per-image rows
    values = [row["sdic"]["mse"] for row in report.per_image]
    assert report.means()["sdic"]["mse"] == pytest.approx(sum(values) / len(values))


def test_evaluate_refuses_bad_settings_before_reading_images(tiny_checkpoint, tmp_path):
    from sdic.errors import InputError, MissingFileError

    model = sdic.load(tiny_checkpoint)
    with pytest.raises(InputError, match="batch size must be at least 1"):
        evaluation.evaluate(model, [tmp_path], evaluation.EvaluationSettings(batch_size=0))
    with pytest.raises(MissingFileError, match="no such folder or file"):
        evaluation.evaluate(model, [tmp_path], evaluation.EvaluationSettings(reference=tmp_path / "missing"))
    with pytest.raises(MissingFileError, match="no images found"):
        evaluation.evaluate(model, [tmp_path])


def test_no_grid_and_a_single_image(tiny_checkpoint, photos, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", str(tiny_checkpoint), str(photos / "0.png"), "-o", str(out), "--metrics", "mse",
                 "--grid", "0"]) == 0
    captured = capsys.readouterr()
    assert "FID needs at least 2 images; skipped" in captured.err
    assert not (out / "grid.png").exists() and (out / "results.json").is_file()


def test_the_cli_defaults_are_the_settings_defaults():
    from sdic.cli.main import build_parser

    args = build_parser().parse_args(["evaluate", "m", "x", "-o", "o"])
    settings = evaluation.EvaluationSettings()
    assert (args.grid, args.batch_size, args.reference) == (settings.grid_rows, settings.batch_size, settings.reference)
