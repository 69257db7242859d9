"""The command line end to end on a small model, including a corrupt image in the folder."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

import sdic
from sdic.cli.main import main


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image, not picked up")
    return folder


def test_invert_folder_skips_the_corrupt_image_and_reports_it(tiny_checkpoint, photos, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["invert", str(tiny_checkpoint), str(photos), "-o", str(out), "--batch-size", "2",
                 "--save-latents", "npz", "--save-intermediate"])
    assert code == 1
    captured = capsys.readouterr()
    assert "broken.jpg: not a readable image" in captured.err
    assert "wrote results for 2 of 3 images" in captured.out
    assert sorted(p.name for p in out.glob("*.png")) == [
        "a.png", "a_discrepancy.png", "a_e4e.png", "b.png", "b_discrepancy.png", "b_e4e.png"]
    arrays = np.load(out / "a.npz")
    assert arrays["latents"].shape == (8, 32) and arrays["image"].shape == (3, 32, 32)
    # The CLI result equals the Python API on the same file.
    model = sdic.load(tiny_checkpoint)
    expected = model.invert(photos / "a.png")
    assert np.allclose(arrays["image"], expected.image[0].numpy(), atol=1e-5)


def test_edit_with_several_factors_and_a_direction_file(tiny_checkpoint, photos, tmp_path):
    direction = tmp_path / "dir.pt"
    torch.save(torch.randn(1, 32), direction)
    out = tmp_path / "edits"
    code = main(["edit", str(tiny_checkpoint), str(photos / "a.png"), "-o", str(out),
                 "--direction", str(direction), "--factor", "-2", "2", "--save-latents", "safetensors"])
    assert code == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["a_dir+2.png", "a_dir-2.png"]
    from safetensors.torch import load_file

    plus, minus = load_file(str(out / "a_dir+2.safetensors")), load_file(str(out / "a_dir-2.safetensors"))
    assert torch.allclose(plus["latents"] - minus["latents"], 4 * torch.load(direction)[0].expand(8, -1), atol=1e-5)


def test_glob_inputs_and_duplicate_names(tiny_checkpoint, photos, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(photos / "a.png", other / "a.png")
    out = tmp_path / "out"
    assert main(["invert", str(tiny_checkpoint), str(photos / "*.png"), str(other / "a.png"), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "a_1.png", "b.png"]


def test_bad_direction_fails_before_any_work(tiny_checkpoint, photos, tmp_path, capsys):
    code = main(["edit", str(tiny_checkpoint), str(photos), "-o", str(tmp_path / "x"), "--direction", "moustache"])
    assert code == 2
    assert "unknown direction 'moustache'" in capsys.readouterr().err


def test_missing_checkpoint_and_no_images(tmp_path, photos, capsys):
    assert main(["invert", str(tmp_path / "nope.pt"), str(photos), "-o", str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["invert", str(tmp_path / "nope.pt"), str(empty), "-o", str(tmp_path / "o")]) == 2
    assert "no images found" in capsys.readouterr().err


def test_convert_authors_checkpoint(ffhq_checkpoint, ffhq_model, tmp_path, capsys):
    out = tmp_path / "sdic_ffhq.safetensors"
    assert main(["convert", str(ffhq_checkpoint), str(out)]) == 0
    assert "dropped 90 never-used tensors" in capsys.readouterr().out
    converted = sdic.load(out)
    assert converted.config == ffhq_model.config
    reference = ffhq_model.state_dict()
    for key, value in converted.state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_console_script_is_installed():
    result = subprocess.run(["sdic", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "invert" in result.stdout


def test_align_and_paste_back_on_real_photos(tiny_checkpoint, tmp_path, capsys):
    from conftest import DATA

    faces = DATA / "faces"
    out = tmp_path / "aligned"
    code = main(["edit", str(tiny_checkpoint), str(faces / "astronaut.jpg"), str(faces / "no_face.png"),
                 "-o", str(out), "--align", "--paste-back", "--direction", str(_direction_file(tmp_path)),
                 "--factor", "1"])
    assert code == 1
    assert "no_face.png: no face found" in capsys.readouterr().err
    photo = Image.open(faces / "astronaut.jpg")
    pasted = Image.open(out / "astronaut_dir+1_pasted.png")
    assert pasted.size == photo.size
    assert Image.open(out / "astronaut_dir+1.png").size == (32, 32)
    # Far from the face the photo is untouched.
    assert np.array_equal(np.asarray(pasted)[-20:, -20:], np.asarray(photo.convert("RGB"))[-20:, -20:])


def test_all_faces_of_a_group_photo(tiny_checkpoint, tmp_path):
    from conftest import DATA

    out = tmp_path / "group"
    assert main(["invert", str(tiny_checkpoint), str(DATA / "faces" / "group_t1.jpg"), "-o", str(out),
                 "--align", "--all-faces", "--paste-back"]) == 0
    faces = sorted(p.name for p in out.glob("group_t1_face*.png"))
    assert len(faces) == 6
    assert (out / "group_t1_pasted.png").exists()


def test_paste_back_needs_align(tiny_checkpoint, photos, tmp_path, capsys):
    assert main(["invert", str(tiny_checkpoint), str(photos), "-o", str(tmp_path / "x"), "--paste-back"]) == 2
    assert "need --align" in capsys.readouterr().err


def _direction_file(tmp_path):
    path = tmp_path / "dir.pt"
    torch.save(torch.randn(1, 32), path)
    return path


def test_a_genuine_bug_is_not_a_usage_error(tiny_checkpoint, photos, tmp_path, monkeypatch):
    """Only SDICError becomes the one-line exit 2; a plain ValueError or RuntimeError keeps its traceback."""
    from sdic import evaluation
    from sdic.cli import inference

    def broken(*args, **kwargs):
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(evaluation, "evaluate", broken)
    with pytest.raises(ValueError, match="a bug, not bad input"):
        main(["evaluate", str(tiny_checkpoint), str(photos), "-o", str(tmp_path / "e"), "--no-fid"])

    def crash(*args, **kwargs):
        raise RuntimeError("internal error")

    monkeypatch.setattr(inference, "_write", crash)
    with pytest.raises(RuntimeError, match="internal error"):
        main(["invert", str(tiny_checkpoint), str(photos / "a.png"), "-o", str(tmp_path / "i")])


def test_user_errors_are_sdic_errors_and_keep_their_builtin_class():
    from sdic.config import tiny
    from sdic.editing import resolve
    from sdic.errors import InputError, InputTypeError, MissingFileError, SDICError

    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(MissingFileError, SDICError)
    assert issubclass(InputTypeError, TypeError) and issubclass(InputTypeError, InputError)
    with pytest.raises(TypeError):  # old `except TypeError` callers keep working
        resolve(object(), tiny())
