"""The bundled default model (docs/default_model.md): by name, small, better than its own e4e."""

from __future__ import annotations

from importlib import resources

import pytest
import torch

import sdic
from sdic import demo, editing
from sdic.checkpoints.bundled import BUNDLED_MODELS
from sdic.cli.main import main
from sdic.metrics import LPIPS, mse


@pytest.fixture(scope="module")
def model():
    return sdic.load("default")


@pytest.fixture(scope="module")
def faces(model):
    return model.prepare([str(p) for p in demo.sample_faces()])


def test_bundled_files_fit_the_size_budget():
    data = resources.files("sdic") / "data"
    model_bytes = (data / "models" / BUNDLED_MODELS["default"]).stat().st_size
    direction_bytes = sum(f.stat().st_size for f in (data / "directions" / "facesjs").iterdir())
    assert model_bytes + direction_bytes <= 30 * 2**20


def test_default_model_config_and_directions(model):
    config = model.config
    assert config.generator.size == 64 and config.generator.n_latent == 10
    assert config.tap_resolution == 16 and config.directions == "facesjs"
    names = editing.available(config.directions)
    assert {"female", "facial_hair", "blond_hair"} <= set(names)
    for name in names:
        low, high = editing.factor_range(name, config.directions)
        assert low < 0 < high


def test_sdic_beats_its_own_e4e_on_the_sample_faces(model, faces):
    inv = model.invert(faces)
    assert inv.image.shape == faces.shape and torch.isfinite(inv.image).all()
    e4e, ours = mse(inv.initial_image, faces), mse(inv.image, faces)
    assert float(ours.mean()) < 0.8 * float(e4e.mean())
    lpips = LPIPS("alex")
    with torch.no_grad():
        assert float(lpips(inv.image, faces).mean()) < 0.9 * float(lpips(inv.initial_image, faces).mean())


def test_a_learned_edit_changes_the_face_more_than_factor_zero(model, faces):
    # Factor 0 is close to, not equal to, the inversion: the edit takes the tap of G(W'),
    # the inversion's G7 is the tap of G(W) (docs/architecture.md, inversion and editing).
    inv = model.invert(faces[:2])
    unchanged = float(mse(model.edit(inv, "female", 0.0).image, inv.image).mean())
    edited = float(mse(model.edit(inv, "female", 1.5).image, inv.image).mean())
    assert unchanged < 1e-3 < edited


def test_demo_runs_with_no_arguments(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--steps", "3"]) == 0
    out = tmp_path / "sdic-demo"
    assert (out / "inversion.png").is_file()
    for name in editing.available("facesjs"):
        assert (out / f"edit_{name}.png").is_file() and (out / f"edit_{name}.gif").is_file()
    assert "sdic-demo" in capsys.readouterr().out


def test_a_batch_gives_each_face_its_own_result(model, faces):
    """Batched inference (micro-batched inside DIPN, DICN and the generator) equals one face at a time."""
    inv = model.invert(faces[:3])
    edited = model.edit(inv, "smile", 1.0)
    for i in range(3):
        alone = model.invert(faces[i: i + 1])
        assert torch.allclose(inv.image[i: i + 1], alone.image, atol=1e-4)
        assert torch.allclose(inv.discrepancy[i: i + 1], alone.discrepancy, atol=1e-4)
        assert torch.allclose(edited.image[i: i + 1], model.edit(alone, "smile", 1.0).image, atol=1e-4)
    assert float((inv.image[0] - inv.image[1]).abs().mean()) > 0.05  # the faces differ


def test_the_gpu_batching_policy_gives_the_same_results(model, faces):
    """Off the CPU whole batches go through DIPN, DICN and the generator (activation-modulated
    convolutions at every resolution); checked here by applying that execution on the CPU."""
    from sdic.ops import Execution, set_execution

    expected = model.invert(faces[:3])
    cpu_execution = model.generator.execution
    set_execution(model, Execution.inference("cuda"))
    try:
        assert not model.dipn.execution.split_batches
        batched = model.invert(faces[:3])
        edited = model.edit(batched, "smile", 1.0)
    finally:
        set_execution(model, cpu_execution)
    assert torch.allclose(batched.image, expected.image, atol=1e-4)
    assert torch.allclose(batched.latents, expected.latents, atol=1e-5)
    assert torch.allclose(edited.image, model.edit(expected, "smile", 1.0).image, atol=1e-4)
