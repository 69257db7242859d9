"""Hostile inputs: non-finite numbers, unusual images, clashing output names, bad output folders,
bad direction files, factor ranges (docs: README "Inputs and outputs")."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sdic
from sdic.cli.main import main
from sdic.errors import InputError
from sdic.images import ImageReadError, load_image


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return sdic.load(tiny_checkpoint)


def _photo(path, seed=0, size=20):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed, name in enumerate("abc"):
        _photo(folder / f"{name}.png", seed)
    return folder


def _pngs(folder):
    return sorted(p.name for p in folder.glob("*.png"))


# ---------------------------------------------------------------- 1. non-finite numbers
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_tensor_is_refused(tiny, value):
    x = torch.zeros(2, 3, 64, 64)
    x[1, 0, 3, 4] = value
    with pytest.raises(InputError, match="1 NaN or infinite"):
        tiny.invert(x)


def test_non_finite_direction_and_factor_are_refused(tiny):
    inv = tiny.invert(torch.zeros(1, 3, 64, 64))
    direction = torch.randn(32)
    direction[5] = float("nan")
    with pytest.raises(InputError, match="direction holds 1 NaN"):
        tiny.edit(inv, direction, 1.0)
    for factor in (float("nan"), float("inf")):
        with pytest.raises(InputError, match="finite"):
            tiny.edit(inv, torch.randn(32), factor)


def test_cli_refuses_nan_factor_and_nan_direction_file(tiny_checkpoint, photos, tmp_path, capsys):
    out = tmp_path / "out"
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    torch.save(torch.randn(1, 32), good)
    torch.save(torch.full((1, 32), float("inf")), bad)
    assert main(["edit", str(tiny_checkpoint), str(photos / "a.png"), "-o", str(out),
                 "--direction", str(good), "--factor", "nan"]) == 2
    assert "--factor must be finite, got nan" in capsys.readouterr().err
    assert main(["edit", str(tiny_checkpoint), str(photos / "a.png"), "-o", str(out),
                 "--direction", str(bad)]) == 2
    assert "bad.pt: the direction holds 32 NaN or infinite values" in capsys.readouterr().err
    assert not out.exists() or not _pngs(out)


# ---------------------------------------------------------------- 2. images
def test_16_bit_greyscale_png_is_scaled_not_clipped(tmp_path):
    values = np.arange(0, 65536, 257, dtype=np.uint16)[None].repeat(3, axis=0)  # 0, 257, ..., 65535
    Image.fromarray(values).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")  # a real 16-bit file
    rgb = np.asarray(load_image(tmp_path / "grey16.png"))
    assert rgb.shape == (3, 256, 3)
    assert np.array_equal(rgb[0, :, 0], np.arange(256))  # v / 65535 * 255 exactly, on every channel
    assert np.array_equal(rgb[..., 0], rgb[..., 2])


def test_float_tiff_in_unit_range_and_in_byte_range(tmp_path):
    ramp = (np.arange(256, dtype=np.float32) / 255)[None].repeat(2, axis=0)  # every 8-bit level
    Image.fromarray(ramp).save(tmp_path / "unit.tif")  # float32 [H, W]: mode F
    Image.fromarray(ramp * 255).save(tmp_path / "byte.tif")
    expected = np.arange(256)
    for name in ("unit.tif", "byte.tif"):
        assert np.array_equal(np.asarray(load_image(tmp_path / name))[0, :, 1], expected)
    Image.fromarray(ramp * 1000).save(tmp_path / "hdr.tif")
    with pytest.raises(ImageReadError, match="expected \\[0, 1\\] or \\[0, 255\\]"):
        load_image(tmp_path / "hdr.tif")


def _sideways_with_exif(upright: Image.Image, path):
    """Store the picture rotated 90 degrees counter-clockwise, with the EXIF tag that undoes it."""
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 clockwise to display
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)
    return path


def test_exif_orientation_is_applied(tmp_path):
    upright = np.zeros((4, 6, 3), dtype=np.uint8)
    upright[0, 0] = (255, 0, 0)  # top-left marker
    path = _sideways_with_exif(Image.fromarray(upright), tmp_path / "phone.png")
    assert np.array_equal(np.asarray(load_image(path)), upright)


def test_exif_orientation_is_applied_before_alignment(tmp_path):
    pytest.importorskip("dlib")  # installed by install.sh (CI); the faces extra
    from conftest import DATA
    from sdic.alignment import align_faces

    upright = load_image(DATA / "faces" / "astronaut.jpg")
    path = _sideways_with_exif(upright, tmp_path / "sideways.png")
    face = align_faces(path, output_size=64)[0].image
    assert np.array_equal(np.asarray(face), np.asarray(align_faces(upright, output_size=64)[0].image))


def test_decompression_bomb_in_a_folder_is_skipped(tiny_checkpoint, photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 20x20 photos pass; 64x64 is > 2x the limit
    Image.new("L", (64, 64)).save(photos / "bomb.png")
    out = tmp_path / "out"
    assert main(["invert", str(tiny_checkpoint), str(photos), "-o", str(out)]) == 1
    captured = capsys.readouterr()
    assert "bomb.png: not read, too many pixels for a safe decode (a decompression bomb?)" in captured.err
    assert "wrote results for 3 of 4 images" in captured.out
    assert _pngs(out) == ["a.png", "b.png", "c.png"]


def test_animated_gif_gives_its_first_frame_and_says_so_once(tiny_checkpoint, photos, tmp_path, capsys):
    frames = [Image.new("RGB", (20, 20), colour) for colour in ("red", "blue", "green")]
    frames[0].save(photos / "anim.gif", save_all=True, append_images=frames[1:])
    assert np.asarray(load_image(photos / "anim.gif"))[0, 0].tolist() == [255, 0, 0]
    out = tmp_path / "out"
    assert main(["invert", str(tiny_checkpoint), str(photos), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("anim.gif: animated (3 frames); using the first frame") == 1
    assert "anim.png" in _pngs(out)


def test_folder_glob_and_empty_batches_given_to_the_api(tiny, photos):
    with pytest.raises(ImageReadError, match="is a folder, not an image file"):
        tiny.invert(str(photos) + "/")
    with pytest.raises(ImageReadError, match="a glob pattern"):
        tiny.invert(str(photos / "*.png"))
    with pytest.raises(InputError, match="no images given \\(an empty list\\)"):
        tiny.invert([])
    with pytest.raises(InputError, match="no images given \\(an empty batch of shape \\[0, 3, 64, 64\\]\\)"):
        tiny.invert(torch.empty(0, 3, 64, 64))


# ---------------------------------------------------------------- 3. clashing output names
def test_same_stems_from_two_folders_never_overwrite(tiny_checkpoint, photos, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    _photo(other / "a.png", seed=7)
    _photo(other / "a_1.png", seed=8)  # the name the second a.png would have got
    out = tmp_path / "out"
    assert main(["invert", str(tiny_checkpoint), str(photos / "a.png"), str(other), "-o", str(out)]) == 0
    assert _pngs(out) == ["a.png", "a_1.png", "a_2.png"]
    assert f"{other / 'a.png'} is written as a_2" in capsys.readouterr().err
    model = sdic.load(tiny_checkpoint)
    expected = model.invert(other / "a.png").to_pil()[0]
    assert np.array_equal(np.asarray(Image.open(out / "a_2.png")), np.asarray(expected))


def test_outputs_never_overwrite_an_input(tiny_checkpoint, photos, capsys):
    before = (photos / "a.png").read_bytes()
    assert main(["invert", str(tiny_checkpoint), str(photos / "a.png"), "-o", str(photos)]) == 0
    assert (photos / "a.png").read_bytes() == before
    assert (photos / "a_2.png").is_file() and "would overwrite an input" in capsys.readouterr().err


def test_paste_back_names_of_two_photos_with_the_same_stem(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from sdic.cli import inference
    from sdic.inputs import Unit
    from sdic.outputs import OutputFolder

    monkeypatch.setattr(inference, "paste_faces", lambda units, images: Image.new("RGB", (8, 8)))
    picture = Image.new("RGB", (8, 8))
    inv = SimpleNamespace(to_pil=lambda which="image": [picture, picture], image=torch.zeros(2, 3, 8, 8))
    args = SimpleNamespace(save_intermediate=False, save_latents=None, paste_back=True)
    with OutputFolder(tmp_path / "out", note=lambda line: None) as out:
        for stem, folder in (("a", "one"), ("a_1", "two")):  # two group photos named a.jpg
            units = [Unit(f"{stem}_face{k}", tmp_path / folder / "a.jpg", picture, stem=stem) for k in range(2)]
            inference._write(out, inv, units, args)
    assert sorted(p.name for p in (tmp_path / "out").glob("*_pasted.png")) == ["a_1_pasted.png", "a_pasted.png"]


def test_unique_stems_and_claims_are_deterministic(tmp_path):
    from sdic.outputs import OutputFolder, unique_stems

    paths = [tmp_path / "x" / "a.png", tmp_path / "y" / "a.png", tmp_path / "y" / "a_1.png", tmp_path / "z" / "a.jpg"]
    names, notes = unique_stems(paths)
    assert names == ["a", "a_2", "a_1", "a_3"] and len(notes) == 2
    lines = []
    with OutputFolder(tmp_path / "out", note=lines.append) as out:
        assert out.claim("a_e4e.png", "a").name == "a_e4e.png"
        assert out.claim("a_e4e.png", "a").name == "a_e4e.png"  # the same source may rewrite its file
        assert out.claim("a_e4e.png", "a_e4e").name == "a_e4e_2.png"
    assert "already written by this run for a" in lines[0]


def test_two_runs_into_one_folder(tiny_checkpoint, photos, tmp_path, capsys):
    from sdic.outputs import LOCK_NAME

    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    assert main(["invert", str(tiny_checkpoint), str(photos / "a.png"), "-o", str(out)]) == 2
    assert f"another sdic run (pid {os.getpid()}" in capsys.readouterr().err
    assert not _pngs(out)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK_NAME).write_text(json.dumps({"pid": int(finished.stdout), "host": socket.gethostname()}))
    assert main(["invert", str(tiny_checkpoint), str(photos / "a.png"), "-o", str(out)]) == 0  # a stale lock
    assert _pngs(out) == ["a.png"] and not (out / LOCK_NAME).exists()


def test_two_direction_files_with_the_same_stem_in_two_runs(tiny_checkpoint, photos, tmp_path, capsys):
    files = []
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        files.append(tmp_path / folder / "smile.pt")
        torch.save(torch.randn(1, 32), files[-1])
    out = tmp_path / "out"
    run = ["edit", str(tiny_checkpoint), str(photos / "a.png"), "-o", str(out), "--direction"]
    assert main([*run, str(files[0])]) == 0
    first = (out / "a_smile+1.png").read_bytes()
    assert main([*run, str(files[1])]) == 0
    assert "a_smile+1.png holds an earlier run's result" in capsys.readouterr().err
    assert _pngs(out) == ["a_smile+1.png", "a_smile+1_2.png"]
    assert (out / "a_smile+1.png").read_bytes() == first
    assert main([*run, str(files[0])]) == 0  # a re-run rewrites its own file
    assert _pngs(out) == ["a_smile+1.png", "a_smile+1_2.png"]


def test_assess_names_two_direction_files_with_the_same_stem_apart(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from sdic.editing.learn import classifier as clf
    from sdic.editing.learn import directions as lib
    from sdic.editing.learn import interfacegan as ifg

    files = []
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        files.append(tmp_path / folder / "smile.safetensors")
        ifg.save_direction(files[-1], torch.randn(32), {"target": "smile", "latent_std": 1.0})
    seen = {}

    def assess(generator, classifier, named, *rest):  # stands in for the (slow) scoring
        seen["names"] = [entry[0] for entry in named]
        return []

    monkeypatch.setattr(ifg, "load_generator", lambda path, device: None)
    monkeypatch.setattr(clf, "load_classifier", lambda path, device: SimpleNamespace(config=None))
    monkeypatch.setattr(ifg, "parse_target", lambda spec, config: spec)
    monkeypatch.setattr(lib, "_assess_all", assess)
    lib.assess_directions("m", Path("c"), files, tmp_path / "report")
    assert seen["names"] == ["smile", "smile_1"]
    assert "is written as smile_1" in capsys.readouterr().err


# ---------------------------------------------------------------- 4. output folders
def test_output_path_is_a_file_or_below_a_file(tiny_checkpoint, photos, tmp_path, capsys):
    target = tmp_path / "results.png"
    target.write_bytes(b"x")
    assert main(["invert", str(tiny_checkpoint), str(photos / "a.png"), "-o", str(target)]) == 2
    assert "results.png: exists and is not a folder" in capsys.readouterr().err
    assert main(["invert", str(tiny_checkpoint), str(photos / "a.png"), "-o", str(target / "sub")]) == 2
    assert "cannot create the output folder (Not a directory)" in capsys.readouterr().err


def test_output_folder_not_writable(tiny_checkpoint, photos, tmp_path, monkeypatch, capsys):
    import builtins

    real_open = builtins.open

    def refuse(file, mode="r", *args, **kwargs):
        if "x" in mode or "w" in mode:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("sdic.outputs.open", refuse, raising=False)  # root ignores chmod
    assert main(["invert", str(tiny_checkpoint), str(photos / "a.png"), "-o", str(tmp_path / "out")]) == 2
    assert "out: the output folder is not writable (Permission denied)" in capsys.readouterr().err


def test_disk_full_mid_run_keeps_what_was_written(tiny_checkpoint, photos, tmp_path, monkeypatch, capsys):
    real_save = Image.Image.save
    saved = []

    def save(self, fp, *args, **kwargs):
        if len(saved) == 2:
            with open(fp, "wb") as handle:
                handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(fp)
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    out = tmp_path / "out"
    assert main(["invert", str(tiny_checkpoint), str(photos), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "c.png: cannot write (No space left on device); stopped, the 2 files written before are kept" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == [".sdic-outputs.json", "a.png", "b.png"]  # no partial file


# ---------------------------------------------------------------- 5. direction files
def test_direction_file_errors_say_what_is_wrong(tiny_checkpoint, photos, tmp_path, capsys):
    text = tmp_path / "notes.npy"
    text.write_text("0.1 0.2 0.3")
    wrong = tmp_path / "wide.pt"
    torch.save(torch.randn(1, 512), wrong)
    several = tmp_path / "pca.safetensors"
    from safetensors.torch import save_file

    save_file({"mean": torch.zeros(32), "comp": torch.zeros(2, 32)}, str(several))
    cases = {
        str(tmp_path / "missing.pt"): "missing.pt: no such direction file",
        str(text): "notes.npy: not a direction file: not a NumPy .npy array",
        str(wrong): "wide.pt: a direction of shape [512] does not fit this model: expected [32], [1, 32] "
                    "or [1, 8, 32]",
        str(several): "pca.safetensors: not a direction file: expected one tensor",
    }
    for spec, message in cases.items():
        assert main(["edit", str(tiny_checkpoint), str(photos / "a.png"), "-o", str(tmp_path / "o"),
                     "--direction", spec]) == 2
        err = capsys.readouterr().err
        assert message in err and "allow_pickle" not in err and "unknown direction" not in err


# ---------------------------------------------------------------- 6. factors
def test_factor_forms():
    from sdic.cli.factors import parse_factors

    assert parse_factors(["2"]) == [2.0]
    assert parse_factors(["-2", "2"]) == [-2.0, 2.0]
    assert parse_factors(["-3:3:7"]) == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    assert parse_factors(["-3", "3"], steps=7) == parse_factors(["-3:3:7"])
    assert parse_factors(["-1,0.5,2"]) == [-1.0, 0.5, 2.0]
    for tokens, steps, message in [(["inf"], None, "finite"), (["1", "1"], None, "same output name"),
                                   (["-3:3"], None, "START:STOP:COUNT"), (["2"], 5, "exactly two"),
                                   (["0:1:1"], None, "at least 2 steps")]:
        with pytest.raises(InputError, match=message):
            parse_factors(tokens, steps)


def test_factor_values_do_not_swallow_the_images(tiny_checkpoint, photos, tmp_path):
    direction = tmp_path / "d.pt"
    torch.save(torch.randn(1, 32), direction)
    out = tmp_path / "out"
    assert main(["edit", str(tiny_checkpoint), "--factor", "-1", "1", str(photos / "a.png"), "-o", str(out),
                 "--direction", str(direction)]) == 0
    assert _pngs(out) == ["a_d+1.png", "a_d-1.png"]
    assert main(["edit", str(tiny_checkpoint), "-o", str(out), "--direction", str(direction),
                 "--factor=-2:2:3", str(photos / "b.png")]) == 0
    assert {"b_d-2.png", "b_d+0.png", "b_d+2.png"} <= set(_pngs(out))
    assert main(["edit", str(tiny_checkpoint), "-o", str(out), "--direction", str(direction),
                 "--factor", "0", "2", "--steps", "3", str(photos / "c.png")]) == 0
    assert {"c_d+0.png", "c_d+1.png", "c_d+2.png"} <= set(_pngs(out))
    # a range or a list that starts with '-' needs no '=' (argparse would take it for an option)
    assert main(["edit", str(tiny_checkpoint), "-o", str(out), "--direction", str(direction),
                 "--factor", "-4:-2:2", str(photos / "c.png")]) == 0
    assert main(["edit", str(tiny_checkpoint), str(photos / "a.png"), "-o", str(out), "--direction", str(direction),
                 "--factor", "-3,3"]) == 0
    assert {"c_d-4.png", "c_d-2.png", "a_d-3.png", "a_d+3.png"} <= set(_pngs(out))


# ---------------------------------------------------------------- 7. progress and the FID warning
class _MeanFeatures(torch.nn.Module):
    """A stand-in feature network: per-channel means (the bar and the warning do not need Inception)."""

    input_range = (0.0, 1.0)

    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_fid_features_show_progress_and_warn_below_1000_images(capsys):
    from sdic.metrics.fid import SmallSampleWarning, compute_features

    with pytest.warns(SmallSampleWarning, match="FID computed on 5 images"):
        features = compute_features(torch.rand(5, 3, 8, 8), _MeanFeatures(), batch_size=2)
    assert features.shape == (5, 3)
    assert "FID features" in capsys.readouterr().err


def test_demo_shows_progress(tiny, tmp_path, capsys):
    from sdic.demo import run_demo, sample_faces

    run_demo(tiny, sample_faces()[:2], tmp_path / "demo", {"d": torch.randn(32)}, steps=2, size=16)
    err = capsys.readouterr().err
    assert "sdic demo" in err and "3/3" in err  # the inversion and two edits


def test_direction_scoring_shows_progress(tiny_checkpoint, capsys):
    from sdic.editing.learn import interfacegan as ifg
    from sdic.editing.learn.directions import Progress

    generator = ifg.load_generator(tiny_checkpoint)
    w = ifg.sample_w(generator, 8, 32, seed=0)
    ifg.score_w(generator, lambda x: {"m": x.mean(dim=(1, 2, 3))}, w, 4, Progress("scoring sampled codes"))
    err = capsys.readouterr().err
    assert "scoring sampled codes" in err and "8/8" in err


# ---------------------------------------------------------------- 8. directions list
def test_directions_list_shows_the_stored_ranges(capsys):
    from sdic import editing

    assert main(["directions", "list", "default"]) == 0
    out = capsys.readouterr().out
    names = editing.available("facesjs")
    assert len(names) == 6
    for name in names:
        low, high = editing.factor_range(name, "facesjs")
        assert f"{low:g} .. {high:g}" in next(line for line in out.splitlines() if line.split()[:1] == [name])
    published = {entry.name: entry for entry in editing.describe("ffhq")}
    assert published["age"].kind == "InterFaceGAN" and published["eyes"].kind == "GANSpace"
    assert "1 = the published edit" in published["eyes"].factors


def test_directions_list_of_a_model_without_directions(tiny_checkpoint, capsys):
    assert main(["directions", "list", str(tiny_checkpoint)]) == 0
    assert "no bundled directions" in capsys.readouterr().out
