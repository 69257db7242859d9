"""The demo pictures: inversion grid, edit grids and GIF sweeps."""

from __future__ import annotations

import torch
from PIL import Image

import sdic
from sdic import demo
from sdic.cli.main import main


def test_demo_writes_grids_and_gifs(tiny_checkpoint, tmp_path):
    model = sdic.load(tiny_checkpoint)
    samples = demo.sample_faces()
    assert len(samples) >= 4
    direction = torch.randn(model.config.generator.style_dim)
    outputs = demo.run_demo(model, samples[:2], tmp_path, {"random": direction}, steps=5, size=32)
    names = sorted(p.name for p in outputs.files)
    assert names == ["edit_random.gif", "edit_random.png", "inversion.png"]
    assert Image.open(tmp_path / "inversion.png").size == (4 * 32, 20 + 2 * 32)
    assert Image.open(tmp_path / "edit_random.png").size == (5 * 32, demo.HEADER + 2 * 32)
    gif = Image.open(tmp_path / "edit_random.gif")
    assert gif.n_frames == 5 + 3  # there and back


def test_demo_cli_rejects_unknown_direction(tiny_checkpoint, tmp_path, capsys):
    assert main(["demo", "--model", str(tiny_checkpoint), "-o", str(tmp_path), "--directions", "smile"]) == 2
    assert "unknown direction 'smile'" in capsys.readouterr().err
