"""Shared fixtures: stand-in checkpoints in the authors' layout, built from the manifests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sdic.testing import authors_checkpoint, read_manifest

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "reference"


@pytest.fixture(scope="session")
def ffhq_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The authors' faces checkpoint layout filled with seed 0 (as the parity data were made)."""
    manifest = read_manifest(REFERENCE / "sdic_ffhq_manifest.json")
    path = tmp_path_factory.mktemp("ckpt") / "sdic_ffhq_seed0.pt"
    torch.save(authors_checkpoint(manifest, 0, {"dataset_type": "ffhq_encode", "stylegan_size": 1024}), path)
    return path


@pytest.fixture(scope="session")
def ffhq_model(ffhq_checkpoint: Path):
    import sdic

    return sdic.load(ffhq_checkpoint)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SDIC model in our format, with random (seeded) weights."""
    from sdic import SDICModel
    from sdic.checkpoints import save_model
    from sdic.config import tiny

    torch.manual_seed(0)
    config = tiny()
    model = SDICModel(config).eval()
    path = tmp_path_factory.mktemp("tiny") / "tiny.safetensors"
    save_model(model, path, config)
    return path
