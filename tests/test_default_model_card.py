"""What docs/default_model.md promises beyond the model itself: the note for photos, the demo's speed-up."""

from __future__ import annotations

import sdic
from sdic.api import photo_note
from sdic.checkpoints.bundled import BUNDLED_MODELS, bundled_path
from sdic.cli.main import main


def test_photo_note_only_for_the_bundled_model(tiny_checkpoint):
    by_name = sdic.load("default")
    note = photo_note(by_name)
    assert note is not None and "synthetic cartoon faces" in note and "FFHQ checkpoint" in note
    assert "The authors' checkpoints" in note  # the README section it points to
    assert photo_note(sdic.load(bundled_path("default"))) == note  # the same file by path
    assert photo_note(sdic.load(tiny_checkpoint)) is None
    assert set(BUNDLED_MODELS) >= {"default"}


def _notes(text: str) -> int:
    return text.count("trained on synthetic cartoon faces")


def test_aligning_photos_for_the_bundled_model_says_so_once(tmp_path, capsys):
    from conftest import DATA

    photo = DATA / "faces" / "astronaut.jpg"
    out = tmp_path / "aligned"
    assert main(["edit", "default", str(photo), str(photo), "-o", str(out), "--align",
                 "--direction", "smile", "--factor", "0", "0.5"]) == 0
    err = capsys.readouterr().err
    assert _notes(err) == 1  # two inputs, two factors: one note
    assert "note: the bundled model 'default'" in err
    assert len(list(out.glob("astronaut*_smile*.png"))) == 4


def test_no_note_without_align_or_for_other_models(tiny_checkpoint, tmp_path, capsys):
    from sdic import demo

    face = demo.sample_faces()[0]
    assert main(["invert", "default", str(face), "-o", str(tmp_path / "plain")]) == 0
    assert _notes(capsys.readouterr().err) == 0
    from conftest import DATA

    assert main(["invert", str(tiny_checkpoint), str(DATA / "faces" / "astronaut.jpg"), "-o",
                 str(tmp_path / "tiny"), "--align"]) == 0
    assert _notes(capsys.readouterr().err) == 0


def _card_commands() -> list[list[str]]:
    """The shell commands of the model card's re-run block, continuation lines joined."""
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "default_model.md").read_text(encoding="utf-8")
    block = text.split("## Re-running the measurements")[1].split("```bash")[1].split("```")[0]
    lines = [line.split("#")[0].rstrip() for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line) for line in lines if line.strip()]


def test_the_model_card_commands_parse(monkeypatch):
    from benchmarks import bench_projected, bench_tap

    from sdic.cli.main import build_parser

    commands = _card_commands()
    assert [c[1] if c[0] == "sdic" else c[2] for c in commands] == [
        "tools.generator_fid", "benchmarks.bench_projected", "tools.generator_fid", "evaluate", "directions",
        "directions", "benchmarks.bench_tap"]
    parser = build_parser()
    fid_counts = []
    for command in commands:
        if command[0] == "sdic":
            args, extra = parser.parse_known_args(command[1:])
            assert extra == [] and callable(args.run), command
        elif command[2] == "tools.generator_fid":
            assert "--reference" in command
            fid_counts.append(command[command.index("--count") + 1])
        elif command[2] == "benchmarks.bench_projected":
            monkeypatch.setattr("sys.argv", command[2:])
            parsed = bench_projected.parse()
            assert parsed.arms == "standard,projected_da" and parsed.chunks == 3
            assert set(parsed.arms.split(",")) <= set(bench_projected.ARMS)
        else:
            monkeypatch.setattr("sys.argv", command[2:])
            assert bench_tap.parse().chunks == 4
    assert fid_counts == ["5000", "1000"]


def test_generator_fid_tool_scores_a_generator_against_its_own_images(tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    from sdic.sampling import generate, to_uint8
    from tools import generator_fid

    own, other = tmp_path / "own", tmp_path / "other"
    own.mkdir(), other.mkdir()
    samples = next(generate(sdic.load_generator("default"), list(range(6)), batch_size=6))
    for i, picture in enumerate(to_uint8(samples.images)):
        Image.fromarray(picture).save(own / f"{i:03d}.png")
        Image.fromarray(np.ascontiguousarray(picture[:, ::-1, ::-1])).save(other / f"{i:03d}.png")  # mirrored, BGR
    cache = tmp_path / "stats" / "own.npz"
    out = tmp_path / "fid.json"
    assert generator_fid.main(["default", "--reference", str(own), "--count", "5", "--stats-cache", str(cache),
                               "--out", str(out)]) == 0
    same = json.loads(out.read_text())["rows"][0]
    assert same["samples"] == 5 and same["fid"] < 1.0  # the reference is its own seeds 0-4, as 8-bit PNGs
    assert cache.is_file()
    for file in own.iterdir():  # the cached statistics stand in for the folder
        file.unlink()
    assert generator_fid.main(["default", "--reference", str(own), "--count", "5", "--stats-cache", str(cache)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["fid"] == same["fid"]
    assert generator_fid.main(["default", "--reference", str(other), "--count", "5"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["fid"] > 20 * max(same["fid"], 1.0)
    assert generator_fid.main(["default", "--reference", str(other), "--count", "7"]) == 2
    assert "6 images, --count 7 needs as many" in capsys.readouterr().err
    assert generator_fid.main(["default", "--reference", str(other), "--count", "6", "--precision-recall"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= row["precision"] <= 1.0 and 0.0 <= row["recall"] <= 1.0 and row["fid"] > 20
    assert generator_fid.main(["default", "--reference", str(other), "--count", "3", "--precision-recall"]) == 2
    assert "k = 3 needs at least" in capsys.readouterr().err
    # diversity: the mirrored reference is as varied as the samples themselves (LPIPS ignores flips
    # and channel order only partly, so compare the levels, not equality)
    assert generator_fid.main(["default", "--reference", str(other), "--count", "6", "--diversity", "30"]) == 0
    reference_row, sample_row = (json.loads(line) for line in capsys.readouterr().out.strip().splitlines()[-2:])
    assert reference_row["generator"] == "reference" and sample_row["generator"] == "default"
    assert 0.02 < sample_row["diversity"] and 0.3 < reference_row["diversity"] / sample_row["diversity"] < 3
