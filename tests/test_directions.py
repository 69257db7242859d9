"""InterFaceGAN directions: boundary recovery on synthetic ground truth, files, assessment, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from sdic import editing
from sdic.checkpoints import CheckpointError, save_model
from sdic.cli.main import main
from sdic.config import tiny
from sdic.editing.learn import assess
from sdic.editing.learn import classifier as clf
from sdic.editing.learn import interfacegan as ifg

D = 16


class LinearImageGenerator(nn.Module):
    """Stand-in generator whose 8x8 image is a fixed linear function of w (identity mapping)."""

    n_latent = 4

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.register_buffer("matrix", torch.randn(3 * 8 * 8, D, generator=torch.Generator().manual_seed(seed)) / 8)

    def z_to_w(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def fixed_noise(self) -> list[torch.Tensor]:
        return []

    def forward(self, w: torch.Tensor, noise: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, None]:
        return (w[:, 0] @ self.matrix.T).reshape(-1, 3, 8, 8), None


class LinearScorer:
    """Binary "classifier": probability = sigmoid(gain * <v, image>) per attribute."""

    def __init__(self, vectors: dict[str, torch.Tensor], gain: float = 4.0) -> None:
        self.vectors, self.gain = vectors, gain
        self.config = clf.ClassifierConfig(attributes=tuple(clf.AttributeSpec(k, "binary") for k in vectors))

    def scores(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        flat = images.flatten(1)
        return {k: torch.sigmoid(self.gain * flat @ v) for k, v in self.vectors.items()}


def image_vector_for(generator: LinearImageGenerator, w_direction: torch.Tensor) -> torch.Tensor:
    """An image-space vector v with A^T v = w_direction (so <v, G(w)> = <w_direction, w>)."""
    return torch.linalg.pinv(generator.matrix.T) @ w_direction


def unit(seed: int) -> torch.Tensor:
    v = torch.randn(D, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a.flatten() @ b.flatten() / (a.norm() * b.norm()))


# ------------------------------------------------------------------ boundary fitting
@pytest.mark.parametrize("method", ["svm", "logistic"])
def test_fit_boundary_recovers_a_known_hyperplane(method):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3000, D, generator=g) * 2 + 0.5
    normal = unit(1)
    score = torch.sigmoid(3 * (w @ normal - 0.3) + 0.5 * torch.randn(3000, generator=g))
    boundary = ifg.fit_boundary(w, score, ratio=0.3, threshold=0.5, method=method)
    assert cosine(boundary.normal, normal) > 0.95
    assert abs(float(boundary.normal.norm()) - 1) < 1e-5
    assert boundary.val_accuracy > 0.95 and boundary.correlation > 0.8 and boundary.confident


def test_fit_boundary_orients_the_normal_towards_high_scores():
    w = torch.randn(500, D, generator=torch.Generator().manual_seed(2))
    normal = unit(3)
    boundary = ifg.fit_boundary(w, -(w @ normal), ratio=0.2)
    assert cosine(boundary.normal, -normal) > 0.95


def test_select_extremes_falls_back_to_ranking_when_few_are_confident():
    score = torch.linspace(0.0, 0.3, 100)  # nobody above 0.5
    top, bottom, confident = ifg.select_extremes(score, 0.2, threshold=0.5)
    assert not confident and len(top) == len(bottom) == 20 and score[top].min() > score[bottom].max()


def test_sampling_and_scoring_images_recovers_the_w_direction():
    generator = LinearImageGenerator()
    truth = unit(4)
    scorer = LinearScorer({"smile": image_vector_for(generator, truth)})
    w = ifg.sample_w(generator, 2000, D, seed=0)
    scores = ifg.score_w(generator, scorer.scores, w, batch_size=500)
    target = ifg.parse_target("smile", scorer.config)
    boundary = ifg.fit_targets(w, scores, [target])["smile"]
    assert cosine(boundary.normal, truth) > 0.95


def test_orthogonalize_removes_the_condition_components():
    primary, a, b = unit(5), unit(6), unit(7)
    out = ifg.orthogonalize(primary, [a, b])
    assert abs(float(out @ a)) < 1e-5 and abs(float(out @ b)) < 1e-5
    assert abs(float(out.norm()) - 1) < 1e-5 and float(out @ primary) > 0
    single = ifg.orthogonalize(primary, [a])
    expected = primary - (primary @ a) * a
    assert cosine(single, expected) > 0.9999
    with pytest.raises(ValueError, match="span"):
        ifg.orthogonalize(a, [a])


# ------------------------------------------------------------------ targets and files
def test_parse_target_forms():
    config = clf.ClassifierConfig(attributes=(
        clf.AttributeSpec("gender", "binary", ("male", "female")),
        clf.AttributeSpec("hair_color_group", "category", ("black", "brown", "blond", "red")),
        clf.AttributeSpec("fatness", "number", (), 0.4, 0.2),
    ))
    female = ifg.parse_target("female=gender", config)
    assert (female.attribute, female.positive, female.spec) == ("gender", "female", "female=gender")
    blond = ifg.parse_target("blond_hair=hair_color_group:blond", config)
    assert blond.category == 2 and ifg.parse_target(blond.spec, config) == blond
    assert ifg.parse_target("hair_color_group:red", config).name == "hair_color_group_red"
    scores = {"hair_color_group": torch.tensor([[0.1, 0.2, 0.6, 0.1]])}
    assert float(blond.score(scores)) == pytest.approx(0.6)
    assert [t.name for t in ifg.default_targets(config)] == ["female", "blond_hair", "fatness"]
    with pytest.raises(ValueError, match="category"):
        ifg.parse_target("hair_color_group", config)
    with pytest.raises(ValueError, match="no attribute"):
        ifg.parse_target("glasses", config)


def test_direction_file_round_trips_into_editing(tmp_path, monkeypatch):
    vector = unit(8)
    path = ifg.save_direction(tmp_path / "facesjs" / "smile.safetensors", vector,
                              {"name": "smile", "accuracy": 0.97, "factor_range": [-2.5, 3.0]})
    loaded, meta = ifg.load_direction(path)
    assert torch.equal(loaded, vector) and loaded.shape == (D,)
    assert meta["accuracy"] == 0.97 and meta["factor_range"] == [-2.5, 3.0] and meta["name"] == "smile"

    config = tiny()
    latents = torch.randn(2, 3, D)
    edit = editing.resolve(loaded, config)
    assert isinstance(edit, editing.LinearDirection)
    assert torch.allclose(edit.apply(latents, 2.0), latents + 2.0 * vector)

    # As a bundled learned set (sdic/data/directions/<set>/<name>.safetensors).
    monkeypatch.setattr(editing.apply, "DIRECTIONS", tmp_path)
    editing.apply._bundled.cache_clear()
    try:
        assert editing.available("facesjs") == ["smile"]
        assert torch.allclose(editing.named("smile", "facesjs").apply(latents, 1.0), latents + vector)
        assert editing.factor_range("smile", "facesjs") == (-2.5, 3.0)
    finally:
        editing.apply._bundled.cache_clear()


# ------------------------------------------------------------------ assessment
def test_assess_moves_the_target_and_not_an_independent_attribute():
    generator = LinearImageGenerator()
    a, b = unit(9), unit(10)
    b = b - (b @ a) * a
    b = b / b.norm()
    scorer = LinearScorer({"a": image_vector_for(generator, a), "b": image_vector_for(generator, b)})
    target = ifg.parse_target("a", scorer.config)
    w = ifg.sample_w(generator, 64, D, seed=1)
    factors = assess.factor_grid(1.0, sigmas=3, steps=13)
    result = assess.assess_direction(generator, scorer, "a", a, target, w, factors)
    means = [r.target_mean for r in result.results]
    assert means == sorted(means) and means[-1] > 0.9 and means[0] < 0.1
    assert max(r.others_max for r in result.results) < 0.02
    low, high = result.factor_range
    assert low < 0 < high and result.at(high).reached >= 0.9 and "reached" in result.stops["positive"]
    assert result.at(0).mse == 0 and result.at(3).mse > 0 and result.at(3).border_mse > 0
    grid = assess.edit_grid(generator, a, w[:2], factors[:3])
    assert grid.size == (3 * 8, 2 * 8)

    # The same direction judged against an entangled "other" attribute: the range shrinks.
    entangled = LinearScorer({"a": image_vector_for(generator, a), "b": image_vector_for(generator, a)})
    result = assess.assess_direction(generator, entangled, "a", a, target, w, factors)
    assert result.factor_range[1] < high and "b changes" in result.stops["positive"]


def test_useful_range_stops_when_the_target_turns_back():
    spec = clf.AttributeSpec("a", "binary")
    rows = [assess.FactorResult(f, m, 0.5, {"b": 0.0}, 0.0, 0.0) for f, m in
            [(-1, 0.3), (0, 0.5), (1, 0.6), (2, 0.7), (3, 0.6)]]
    (low, high), stops = assess.useful_range(rows, spec)
    assert (low, high) == (-1, 2) and "stops moving" in stops["positive"]


# ------------------------------------------------------------------ classifier and CLI
def make_dataset(folder: Path, n: int, size: int = 32, seed: int = 0) -> Path:
    """Faces stand-in: ``bright`` (binary), ``shade`` (category: r/g/b square), ``width`` (number)."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        bright, shade, width = int(rng.integers(2)), int(rng.integers(3)), float(rng.uniform(0.2, 0.8))
        image = np.full((size, size, 3), 200 if bright else 60, dtype=np.uint8)
        half = int(width * size / 2)
        image[size // 2 - half:size // 2 + half, size // 4:3 * size // 4] = 0
        image[size // 2 - half:size // 2 + half, size // 4:3 * size // 4, shade] = 255
        name = f"images/{i:06d}.png"
        Image.fromarray(image).save(folder / name)
        rows.append({"file": name, "index": i, "bright": bright, "shade": shade, "width": round(width, 3)})
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    meta = {"attributes": {
        "index": {"type": "number"}, "bright": {"type": "binary"},
        "shade": {"type": "category", "categories": ["red", "green", "blue"]},
        "width": {"type": "number", "range": [0, 1]},
    }}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("directions")
    dataset = make_dataset(root / "data", 240)
    heldout = make_dataset(root / "heldout", 40, seed=1)
    out = root / "classifier.safetensors"
    code = main(["directions", "train-classifier", str(dataset), "-o", str(out), "--attributes", "bright,shade",
                 "width", "--size", "32", "--epochs", "6", "--batch-size", "32", "--heldout", str(heldout),
                 "--threads", "1"])
    assert code == 0
    return out


def test_train_classifier_learns_the_synthetic_labels(classifier_file):
    model = clf.load_classifier(classifier_file)
    assert model.config.names == ("bright", "shade", "width") and model.config.input_size == 32
    assert model.config.attribute("width").std > 0
    report = json.loads(classifier_file.with_suffix(".json").read_text())
    assert report["heldout"]["bright"]["accuracy"] >= 0.9
    assert set(report["validation"]["width"]) == {"mae", "r2", "corr"}
    metadata = clf.read_classifier_metadata(classifier_file)
    assert json.loads(metadata["report"])["heldout"]["bright"] == report["heldout"]["bright"]
    scores = model.scores(torch.zeros(2, 3, 64, 64))  # any input size
    assert scores["shade"].shape == (2, 3) and scores["bright"].shape == (2,)


def test_load_classifier_rejects_other_files(tiny_checkpoint):
    with pytest.raises(ValueError, match="not an attribute classifier"):
        clf.load_classifier(tiny_checkpoint)


class _GeneratorOnly(nn.Module):
    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator


def test_load_generator_reads_sdic_and_stylegan2_files(tiny_checkpoint, tmp_path):
    generator = ifg.load_generator(tiny_checkpoint)
    path = save_model(_GeneratorOnly(generator), tmp_path / "g.safetensors", tiny(), kind="stylegan2")
    pickled = tmp_path / "stylegan2.pt"  # rosinality layout, as our trainer exports it
    torch.save({"g_ema": generator.state_dict(), "sdic_config": tiny().to_json()}, pickled)
    w = ifg.sample_w(generator, 2, generator.config.style_dim, seed=0)
    for again in (ifg.load_generator(path), ifg.load_generator(pickled)):
        assert torch.equal(ifg.render(generator, w), ifg.render(again, w))
    with pytest.raises(CheckpointError, match="no StyleGAN2 generator|ArcFace|ir_se50"):
        ifg.load_generator(_ir_se50_file(tmp_path))


def _ir_se50_file(folder: Path) -> Path:
    path = folder / "irse.pt"
    torch.save({"input_layer.0.weight": torch.zeros(1), "output_layer.3.weight": torch.zeros(1)}, path)
    return path


def test_cli_train_assess_condition_end_to_end(tiny_checkpoint, classifier_file, tmp_path, capsys):
    out = tmp_path / "dirs"
    cache = tmp_path / "samples.safetensors"
    args = ["directions", "train", str(tiny_checkpoint), "--classifier", str(classifier_file), "-o", str(out),
            "--samples", "160", "--assess-samples", "6", "--steps", "5", "--no-lpips", "--grid-rows", "2",
            "--samples-cache", str(cache), "--threads", "1"]
    assert main(args) == 0
    assert main(args) == 0  # second run reuses the cached samples
    assert "reusing 160 codes" in capsys.readouterr().out
    names = sorted(p.stem for p in out.glob("*.safetensors"))
    assert names == ["bright", "width"]  # no default face targets: every binary / number head
    vector, meta = ifg.load_direction(out / "bright.safetensors")
    assert vector.shape == (tiny().generator.style_dim,) and abs(float(vector.norm()) - 1) < 1e-5
    assert meta["attribute"] == "bright" and 0 <= meta["accuracy"] <= 1 and len(meta["factor_range"]) == 2
    report = json.loads((out / "report.json").read_text())
    assert [d["name"] for d in report["directions"]] == ["bright", "width"]
    assert len(report["directions"][0]["assessment"]["factors"]) == 5
    assert (out / "grids" / "bright.png").is_file() and "| bright |" in (out / "report.md").read_text()

    assessed = tmp_path / "assessed"
    assert main(["directions", "assess", str(tiny_checkpoint), str(out / "bright.safetensors"), "--classifier",
                 str(classifier_file), "-o", str(assessed), "--factors", "-1", "1", "--assess-samples", "4",
                 "--no-lpips", "--grid-rows", "0", "--update"]) == 0
    entry = json.loads((assessed / "report.json").read_text())["directions"][0]
    assert [f["factor"] for f in entry["assessment"]["factors"]] == [-1.0, 0.0, 1.0]
    assert ifg.load_direction(out / "bright.safetensors")[1]["factor_range"] == entry["assessment"]["factor_range"]

    conditioned = tmp_path / "bright_cond.safetensors"
    assert main(["directions", "condition", str(out / "bright.safetensors"), str(out / "width.safetensors"),
                 "-o", str(conditioned)]) == 0
    cond_vector, cond_meta = ifg.load_direction(conditioned)
    width = ifg.load_direction(out / "width.safetensors")[0]
    assert abs(float(cond_vector @ width)) < 1e-5 and cond_meta["conditioned_on"] == ["width"]


def test_cli_reports_bad_targets(tiny_checkpoint, classifier_file, tmp_path, capsys):
    code = main(["directions", "train", str(tiny_checkpoint), "--classifier", str(classifier_file),
                 "-o", str(tmp_path / "x"), "--attributes", "smile", "--samples", "10"])
    assert code == 2 and "no attribute 'smile'" in capsys.readouterr().err


def test_truncation_pulls_codes_to_one_mean():
    generator = LinearImageGenerator()
    w0 = ifg.sample_w(generator, 5, D, seed=3, truncation=0.0)
    assert torch.allclose(w0, w0[:1].expand(5, -1)) and torch.allclose(w0, ifg.sample_w(generator, 2, D, seed=4, truncation=0.0)[:1])
    half = ifg.sample_w(generator, 5, D, seed=3, truncation=0.5)
    assert torch.allclose(half, w0 + 0.5 * (ifg.sample_w(generator, 5, D, seed=3) - w0), atol=1e-6)


# ------------------------------------------------------------------ library calls
def test_learn_and_assess_return_what_the_files_hold(tiny_checkpoint, classifier_file, tmp_path):
    from sdic.editing.learn import directions as lib

    options = lib.LearnOptions(samples=120, targets=("bright", "width"), assess_samples=4, steps=3, lpips=False,
                               grid_rows=0)
    report = lib.learn_directions(tiny_checkpoint, classifier_file, tmp_path / "d", options, log=lambda line: None)
    bright, width = report.directions
    vector, meta = ifg.load_direction(bright.file)
    assert torch.equal(vector, bright.vector.float()) and meta["factor_range"] == list(bright.assessment.factor_range)
    assert meta["accuracy"] == round(bright.boundary.val_accuracy, 4)
    assert json.loads((tmp_path / "d" / "report.json").read_text()) == json.loads(json.dumps(report.to_dict()))
    assert (tmp_path / "d" / "report.md").read_text() == report.to_markdown() + "\n"

    # assessing the written file over the same factors, with the same codes, repeats the assessment
    factors = tuple(r.factor for r in bright.assessment.results)
    again = lib.assess_directions(tiny_checkpoint, classifier_file, [bright.file], tmp_path / "a",
                                  lib.AssessOptions(assess_samples=4, factors=factors, lpips=False, grid_rows=0),
                                  log=lambda line: None)
    [entry] = again.directions
    assert entry.file == bright.file and entry.name == "bright"
    assert [r.to_dict() for r in entry.assessment.results] == [r.to_dict() for r in bright.assessment.results]
    assert again.to_dict()["directions"][0]["file"] == str(bright.file)

    conditioned = lib.condition_direction(bright.file, [width.file], tmp_path / "c.safetensors")
    assert abs(float(conditioned.vector @ width.vector)) < 1e-5
    assert conditioned.metadata["conditioned_on"] == ["width"]
    assert editing.load_direction(conditioned.file).metadata["cosine_to_original"] == conditioned.cosine_to_original


def test_options_are_checked_before_any_work(tiny_checkpoint, classifier_file, tmp_path):
    from sdic.editing.learn import directions as lib
    from sdic.errors import InputError

    for options, message in ((lib.LearnOptions(steps=4), "odd number of steps"),
                             (lib.LearnOptions(ratio=0.7), "ratio"),
                             (lib.LearnOptions(assess_samples=0), "assess_samples")):
        with pytest.raises(InputError, match=message):
            lib.learn_directions(tmp_path / "never-read.pt", classifier_file, tmp_path / "d", options)


def test_cli_defaults_are_the_options_defaults():
    from sdic.cli.main import build_parser
    from sdic.editing.learn import directions as lib

    args = build_parser().parse_args(["directions", "train", "m", "--classifier", "c", "-o", "o"])
    learn = lib.LearnOptions()
    assert (args.samples, args.ratio, args.method, args.assess_samples, args.sigmas, args.steps, args.grid_rows,
            args.batch_size, args.truncation, args.seed, args.max_side_effect, args.reach) == (
        learn.samples, learn.ratio, learn.method, learn.assess_samples, learn.sigmas, learn.steps, learn.grid_rows,
        learn.batch_size, learn.truncation, learn.seed, learn.judge.max_side_effect, learn.judge.reach)
    args = build_parser().parse_args(["directions", "train-classifier", "d", "-o", "c.safetensors"])
    train = clf.TrainSettings()
    assert (args.epochs, args.batch_size, args.lr, args.val_fraction, args.size) == (
        train.epochs, train.batch_size, train.lr, train.val_fraction, clf.ClassifierConfig.input_size)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_hostile_label_files_and_caches_are_one_line(tiny_checkpoint, classifier_file, tmp_path, capsys):
    dataset = make_dataset(tmp_path / "data", 4)
    train = ["directions", "train-classifier", str(dataset), "-o", str(tmp_path / "c.safetensors"),
             "--attributes", "bright", "--epochs", "1"]
    labels = (dataset / "labels.csv").read_text()
    (dataset / "labels.csv").write_text(labels.replace("\n", "\nimages/x.png,1,one,0,0.5\n", 1))
    assert main(train) == 2 and "column 'bright', row 1: not a number ('one')" in _one_line_error(capsys)
    (dataset / "labels.csv").write_text(labels)
    (dataset / "meta.json").write_text("{not json")
    assert main(train) == 2 and "meta.json" in _one_line_error(capsys)
    (dataset / "meta.json").write_text(json.dumps({"attributes": {"bright": {"kind": "binary"}}}))
    assert main(train) == 2 and "needs a 'type'" in _one_line_error(capsys)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    assess_args = ["directions", "assess", str(tiny_checkpoint), str(garbage), "--target", "bright",
                   "--classifier", str(classifier_file), "-o", str(tmp_path / "a"), "--no-lpips"]
    assert main(assess_args) == 2 and "not a direction file" in _one_line_error(capsys)
    direction = ifg.save_direction(tmp_path / "d.safetensors", torch.randn(32), {"target": "bright"})
    assess_args[3] = str(direction)
    assess_args[assess_args.index("--classifier") + 1] = str(garbage)
    assert main(assess_args) == 2 and "not an attribute classifier" in _one_line_error(capsys)
    assert main(["directions", "train", str(tiny_checkpoint), "--classifier", str(classifier_file), "-o",
                 str(tmp_path / "t"), "--samples", "8", "--samples-cache", str(garbage)]) == 2
    assert "not a samples cache" in _one_line_error(capsys)


def test_cli_train_takes_an_explicit_factor_grid(tiny_checkpoint, classifier_file, tmp_path):
    out = tmp_path / "dirs"
    assert main(["directions", "train", str(tiny_checkpoint), "--classifier", str(classifier_file), "-o", str(out),
                 "--samples", "120", "--assess-samples", "4", "--factors", "-2", "-1", "1", "2", "--no-lpips",
                 "--grid-rows", "0", "--threads", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    for entry in report["directions"]:
        assert [f["factor"] for f in entry["assessment"]["factors"]] == [-2.0, -1.0, 0.0, 1.0, 2.0]
        low, high = ifg.load_direction(out / f"{entry['name']}.safetensors")[1]["factor_range"]
        assert -2.0 <= low <= 0.0 <= high <= 2.0  # the stored range lies on the given grid
