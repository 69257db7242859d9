"""Directions assessed on inverted faces (sdic.editing.learn.inverted, `sdic directions assess-inverted`)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from sdic.cli.main import main
from sdic.editing.learn import interfacegan as ifg
from sdic.editing.learn import inverted
from sdic.editing.learn.classifier import AttributeClassifier, AttributeSpec, ClassifierConfig, save_classifier
from sdic.errors import InputError

SIZE = 16
BACKGROUND = torch.tensor([0.6, 0.5, 0.7])  # in [-1, 1]


def _faces(brightness: list[float]) -> torch.Tensor:
    """Flat background, one drawn square (rows/cols 4..11) per face whose red channel is ``brightness``."""
    images = BACKGROUND[None, :, None, None].repeat(len(brightness), 1, SIZE, SIZE)
    for i, value in enumerate(brightness):
        images[i, :, 4:12, 4:12] = torch.tensor([value, -0.8, -0.8])[:, None, None]
    return images


def test_background_and_face_masks_on_a_drawn_square():
    images = _faces([0.0, 0.3])
    face = inverted.face_mask(images, BACKGROUND.expand(2, 3))
    outside = inverted.background_mask(images, BACKGROUND.expand(2, 3), inverted.MaskSettings(margin=1))
    assert face.sum((1, 2)).tolist() == [64, 64] and bool(face[:, 4:12, 4:12].all())
    # eroded by one pixel: the ring of width 1 around the square is neither face nor outside
    assert outside.sum((1, 2)).tolist() == [SIZE * SIZE - 100] * 2
    assert not outside[:, 3:13, 3:13].any() and bool(outside[:, :3].all())
    # a colour within the tolerance still counts as background
    shifted = images.clone()
    shifted[:, :, :2] += 4 / 255
    assert torch.equal(inverted.background_mask(shifted, BACKGROUND.expand(2, 3)), outside)
    assert torch.allclose(inverted.ring_colour(images), BACKGROUND.expand(2, 3))


def test_masked_mse_and_started_change_by_hand():
    squared = torch.zeros(2, 3, 2, 2)
    squared[0, 0, 0, 0] = 3.0  # image 0: one channel of one masked pixel
    squared[1] = 1.0
    mask = torch.tensor([[[True, True], [False, False]], [[True, False], [False, False]]])
    # image 0: 3 / (2 pixels * 3 channels) = 0.5; image 1: 1; mean 0.75
    assert inverted.masked_mse(squared, mask) == pytest.approx(0.75)
    assert np.isnan(inverted.masked_mse(squared, torch.zeros(2, 2, 2, dtype=torch.bool)))
    target = ifg.Target("smile", "smile", "binary")
    base, after = torch.tensor([0.1, 0.4, 0.9]), torch.tensor([0.7, 0.8, 0.95])
    assert inverted.started_change(target, 1.0, base, after, 1.0) == pytest.approx((0.6 + 0.4) / 2)
    assert inverted.started_change(target, 1.0, base, after, -1.0) == pytest.approx(-0.05)
    number = ifg.Target("fatness", "fatness", "number")
    assert inverted.started_change(number, 0.5, base, after, 1.0) == pytest.approx(float((after - base).mean()) / 0.5)


@dataclass
class _Inv:
    input: torch.Tensor
    image: torch.Tensor

    def __len__(self) -> int:
        return self.image.shape[0]

    def __getitem__(self, index: slice) -> _Inv:
        return _Inv(self.input[index], self.image[index])


class _Model:
    """Edits add ``factor * 0.5`` to the red channel of the drawn square only (known effect, nothing outside)."""

    config = SimpleNamespace(input_size=SIZE)

    def edit(self, inv: _Inv, direction: torch.Tensor, factor: float) -> _Inv:
        image = inv.image.clone()
        image[:, 0, 4:12, 4:12] += 0.5 * factor * float(direction.sum())
        return _Inv(inv.input, image)


class _Classifier:
    """``smile``: sigmoid(4 * red mean of the square); ``hat``: constant."""

    config = ClassifierConfig((AttributeSpec("smile", "binary"), AttributeSpec("hat", "binary")))

    def scores(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        red = images[:, 0, 4:12, 4:12].mean((1, 2))
        return {"smile": torch.sigmoid(4 * red), "hat": torch.full_like(red, 0.3)}


def test_assess_inverted_against_the_known_edit():
    brightness = [-0.6, -0.2, 0.1, 0.5]
    images = _faces(brightness)
    inv = _Inv(images, images.clone())
    masks = (inverted.face_mask(images, BACKGROUND.expand(4, 3)), inverted.background_mask(images, BACKGROUND.expand(4, 3)))
    target = ifg.Target("smile", "smile", "binary")
    kept: dict[float, torch.Tensor] = {}
    result = inverted.assess_inverted(_Model(), _Classifier(), inv, "smile", torch.tensor([1.0]), target,
                                      [-1.0, 1.0, 2.0], (-0.5, 0.8), masks, batch_size=3, keep=kept, keep_rows=2)
    assert [r.factor for r in result.results] == [-1.0, -0.5, 0.0, 0.8, 1.0, 2.0]
    red = np.array(brightness)
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    before = sigmoid(4 * red)
    for r in result.results:
        after = sigmoid(4 * (red + 0.5 * r.factor))
        assert r.target_mean == pytest.approx(after.mean(), abs=1e-6)
        assert r.change == pytest.approx((after - before).mean(), abs=1e-6)
        started = before <= 0.5 if r.factor > 0 else before >= 0.5
        expected = 0.0 if r.factor == 0 else (np.sign(r.factor) * (after - before))[started].mean()
        assert r.change_started == pytest.approx(expected, abs=1e-6)
        # only channel 0 of the face changes, by 0.5 f: face MSE (0.5 f)^2 / 3, outside exactly 0
        assert r.mse_face == pytest.approx((0.5 * r.factor) ** 2 / 3, abs=1e-6)
        assert r.mse_outside == 0.0 and r.outside_ratio == 0.0
        assert r.others == {"hat": pytest.approx(0.0)}
    assert result.input_mean == pytest.approx(before.mean(), abs=1e-6)
    # of the two faces below 0.5 (red -0.6, -0.2), red + 0.5 f > 0 for one at 0.8 and 1, for both at 2
    assert [result.at(f).reached for f in (0.8, 1.0, 2.0)] == [0.5, 0.5, 1.0]
    assert result.factor_range == (-1.0, 2.0) and "reached at 2" in result.stops["positive"]
    assert result.moves() == (result.at(0.8).change_started >= inverted.MOVES_THRESHOLD)
    # removal at the documented -0.5: the faces that started with it (red 0.1, 0.5) fall by
    # sigmoid(0.4) - sigmoid(-0.6) and sigmoid(2) - sigmoid(1): 0.197 on average, under 0.4
    expected_drop = ((sigmoid(0.4) - sigmoid(-0.6)) + (sigmoid(2.0) - sigmoid(1.0))) / 2
    assert result.at(-0.5).change_started == pytest.approx(expected_drop, abs=1e-6) and not result.removes()
    assert result.moves(threshold=0.15, side=-1) and not result.moves(threshold=0.25, side=-1)
    assert sorted(kept) == [-1.0, -0.5, 0.0, 0.8, 1.0, 2.0] and kept[1.0].shape == (2, 3, SIZE, SIZE)
    picture = inverted.sweep_picture(images[:2], kept)
    assert picture.size == (SIZE * 7, SIZE * 2)


def _labelled_folder(root, count: int = 3):
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        picture = np.full((64, 64, 3), (200, 190, 210), dtype=np.uint8)
        picture[16:56, 20:44] = rng.integers(0, 255, 3)
        Image.fromarray(picture).save(root / "images" / f"{i:06d}.png")
        rows.append({"file": f"images/{i:06d}.png", "index": i, "smile": i % 2, "bg_r": 200, "bg_g": 190, "bg_b": 210})
    with open(root / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_read_faces_uses_the_labelled_background(tmp_path):
    folder = _labelled_folder(tmp_path / "faces", 3)
    faces = inverted.read_faces(folder, 2)
    assert [p.name for p in faces.paths] == ["000000.png", "000001.png"]
    assert torch.allclose(faces.background, torch.tensor([[200, 190, 210]] * 2) / 127.5 - 1)
    plain = inverted.read_faces(folder / "images")
    assert len(plain.paths) == 3 and plain.background is None
    with pytest.raises(InputError, match="no face images"):
        (tmp_path / "empty").mkdir()
        inverted.read_faces(tmp_path / "empty")


def test_cli_assess_inverted_on_the_tiny_model(tiny_checkpoint, tmp_path, capsys):
    folder = _labelled_folder(tmp_path / "faces", 3)
    torch.manual_seed(0)
    classifier = tmp_path / "clf.safetensors"
    save_classifier(AttributeClassifier(ClassifierConfig((AttributeSpec("smile", "binary"),
                                                          AttributeSpec("hat", "binary")), widths=(8, 8))), classifier)
    direction = ifg.save_direction(tmp_path / "smile.safetensors", torch.nn.functional.normalize(torch.randn(32), dim=0),
                                   {"name": "smile", "target": "smile", "latent_std": 0.5, "factor_range": [-0.2, 0.6]})
    out = tmp_path / "out"
    assert main(["directions", "assess-inverted", str(tiny_checkpoint), str(folder), "--classifier", str(classifier),
                 "--directions", str(direction), "-o", str(out), "--count", "2", "--steps", "3",
                 "--grid-rows", "2", "--batch-size", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["faces"] == 2 and report["directions"][0]["documented_range"] == [-0.2, 0.6]
    factors = [f["factor"] for f in report["directions"][0]["factors"]]
    assert factors == [-1.5, -0.2, 0.0, 0.6, 1.5]  # the +-3 sigma grid of 3 steps and the documented range
    zero = report["directions"][0]["factors"][2]
    assert zero["mse"] == 0.0 and zero["change"] == 0.0
    assert "| smile | 0.6 |" in (out / "report.md").read_text()
    assert Image.open(out / "grids" / "smile.png").size == (6 * 64, 2 * 64)
    assert "adding their attribute" in capsys.readouterr().out
    assert set(report["directions"][0]) >= {"moves", "removes"} and "removing" in report
    # --update stores the range measured on these faces in the file; the bundled files are refused
    assert main(["directions", "assess-inverted", str(tiny_checkpoint), str(folder), "--classifier", str(classifier),
                 "--directions", str(direction), "-o", str(out), "--count", "2", "--factors", "-1", "1",
                 "--grid-rows", "0", "--update"]) == 0
    assert "stored the ranges" in capsys.readouterr().out
    measured = json.loads((out / "report.json").read_text())["directions"][0]["factor_range"]
    vector, meta = ifg.load_direction(direction)
    assert meta["factor_range"] == measured and meta["factor_range_from"] == "2 inverted faces"
    assert meta["target"] == "smile" and meta["latent_std"] == 0.5 and vector.shape == (32,)
    # a direction file without the metadata of `sdic directions train` is refused before any work
    bare = ifg.save_direction(tmp_path / "bare.safetensors", torch.randn(32), {"name": "bare"})
    assert main(["directions", "assess-inverted", str(tiny_checkpoint), str(folder), "--classifier", str(classifier),
                 "--directions", str(bare), "-o", str(out)]) == 2
    assert "no target / latent_std" in capsys.readouterr().err
    assert main(["directions", "assess-inverted", str(tiny_checkpoint), str(folder), "--classifier", str(classifier),
                 "--directions", str(direction), "-o", str(out), "--steps", "4"]) == 2
    assert "odd number of steps" in capsys.readouterr().err


def test_assess_inverted_update_refuses_the_bundled_files(tmp_path, capsys):
    classifier = tmp_path / "clf.safetensors"
    save_classifier(AttributeClassifier(ClassifierConfig((AttributeSpec("smile", "binary"),), widths=(8, 8))), classifier)
    folder = _labelled_folder(tmp_path / "faces", 1)
    assert main(["directions", "assess-inverted", "default", str(folder), "--classifier", str(classifier),
                 "--directions", "smile", "-o", str(tmp_path / "out"), "--update"]) == 2
    assert "would rewrite the bundled direction smile.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before any work
