"""``sdic directions assess-inverted``: directions applied to inverted held-out faces.

A subcommand of ``sdic directions`` kept in its own module: a thin layer over
:mod:`sdic.editing.learn.inverted` (docs/directions.md, "On inverted faces").
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

import torch
from tqdm import tqdm

from .. import demo
from ..editing import available
from ..editing.learn import inverted
from ..editing.learn.assess import AssessSettings, factor_grid
from ..editing.learn.classifier import load_classifier
from ..editing.learn.interfacegan import load_direction, parse_target, save_direction
from ..errors import InputError
from ..outputs import unique_stems


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "assess-inverted", help="invert held-out faces with an SDIC model and score its directions' edits on them")
    parser.add_argument("model", help="SDIC model: a bundled name (default) or a file")
    parser.add_argument("faces", type=Path,
                        help="held-out faces: a labelled folder (images/, labels.csv) or a folder of images")
    parser.add_argument("--classifier", type=Path, required=True, help="attribute classifier .safetensors")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for report.json, report.md, grids/")
    parser.add_argument("--directions", nargs="+",
                        help="bundled names or direction files (default: all of the model's learned directions)")
    parser.add_argument("--count", type=int, default=200, help="faces to invert, the first N (default 200)")
    parser.add_argument("--sigmas", type=float, default=3.0,
                        help="factor grid spans +-SIGMAS x the std of w along the direction (default 3)")
    parser.add_argument("--steps", type=int, default=13, help="factors in the grid, odd (default 13)")
    parser.add_argument("--factors", type=float, nargs="+", help="explicit factors (default: the sigma grid)")
    parser.add_argument("--max-side-effect", type=float, default=AssessSettings.max_side_effect,
                        help="largest mean change of another attribute inside the useful range (default 0.25)")
    parser.add_argument("--reach", type=float, default=AssessSettings.reach,
                        help="fraction of faces on the target side that ends the range (default 0.9)")
    parser.add_argument("--update", action="store_true",
                        help="write the useful range measured here into the direction files (files named with "
                             "--directions, not the bundled ones)")
    parser.add_argument("--grid-rows", type=int, default=4, help="faces shown per direction in grids/ (0: none)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.set_defaults(run=run)


def _direction_files(specs: list[str] | None, direction_set: str) -> list[Path]:
    """Files of the named bundled directions (or of all of them), or the given files."""
    folder = Path(str(resources.files("sdic") / "data" / "directions" / direction_set))
    names = available(direction_set)
    files = []
    for spec in specs or names:
        path = Path(spec)
        if path.suffix == ".safetensors" and path.is_file():
            files.append(path)
        elif (folder / f"{spec}.safetensors").is_file():
            files.append(folder / f"{spec}.safetensors")
        else:
            raise InputError(f"{spec}: not a direction file (.safetensors with metadata) nor a learned direction "
                             f"of this model ({', '.join(names) or 'none'})")
    if not files:
        raise InputError("the model has no learned directions; name direction files with --directions")
    return files


def _check_writable(files: list[Path]) -> None:
    """``--update`` rewrites files: refuse the package's own (copy them first)."""
    package = Path(str(resources.files("sdic"))).resolve()
    bundled = [f for f in files if f.resolve().is_relative_to(package)]
    if bundled:
        raise InputError(f"--update would rewrite the bundled direction {bundled[0].name} inside the package; "
                         "copy the files and name the copies with --directions")


def _update_ranges(files: list[Path], outcome: inverted.InvertedRun) -> None:
    """Store each direction's range measured on the inverted faces as its ``factor_range``."""
    for path, assessment in zip(files, outcome.assessments):
        vector, meta = load_direction(path)
        kept = {k: v for k, v in meta.items() if k != "format"}
        save_direction(path, vector, {**kept, "factor_range": list(assessment.factor_range),
                                      "factor_range_from": f"{outcome.faces} inverted faces"})


def _entries(files: list[Path], classifier) -> list[inverted.DirectionToAssess]:
    names, _ = unique_stems(files)
    entries = []
    for path, name in zip(files, names):
        vector, meta = load_direction(path)
        if not meta.get("target") or not meta.get("latent_std"):
            raise InputError(f"{path}: no target / latent_std in its metadata (a file of `sdic directions train`)")
        documented = tuple(float(v) for v in meta.get("factor_range") or demo.DEFAULT_RANGE)
        entries.append(inverted.DirectionToAssess(
            name, vector.reshape(-1).float(), parse_target(str(meta["target"]), classifier.config),
            float(meta["latent_std"]), documented))
    return entries


class _Bars:
    """One progress bar for the inversion, then one for the directions (with a line per direction)."""

    def __init__(self, faces: int, directions: int) -> None:
        self.bar = tqdm(total=faces, unit="img", desc="inverting faces")
        self.directions = directions

    def inverted(self, done: int, total: int) -> None:
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.bar.close()
            self.bar = tqdm(total=self.directions, unit="direction", desc="assessing directions")

    def assessed(self, result: inverted.InvertedAssessment) -> None:
        r = result.at(result.documented[1])
        tqdm.write(f"{result.name}: at {result.documented[1]:g} change {r.change:+.3f} "
                   f"(started without: {r.change_started:+.3f}), outside/face MSE {r.outside_ratio:.3f}")
        self.bar.update(1)
        if self.bar.n >= self.directions:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    from ..api import load

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if not args.factors:
        factor_grid(1.0, args.sigmas, args.steps)  # a bad grid fails before any work
    model = load(args.model, device=args.device)
    classifier = load_classifier(args.classifier, args.device)
    files = _direction_files(args.directions, model.config.directions)
    if args.update:
        _check_writable(files)
    entries = _entries(files, classifier)
    faces = inverted.read_faces(args.faces, args.count)
    settings = AssessSettings(max_side_effect=args.max_side_effect, reach=args.reach)
    args.output.mkdir(parents=True, exist_ok=True)
    bars = _Bars(len(faces.paths), len(entries))
    outcome = inverted.run_inverted(model, classifier, faces, entries, args.sigmas, args.steps, args.factors,
                                    settings, batch_size=args.batch_size, grid_rows=args.grid_rows,
                                    invert_progress=bars.inverted, direction_done=bars.assessed)
    report = {"model": str(args.model), "classifier": str(args.classifier), "faces_folder": str(args.faces),
              **outcome.to_dict()}
    (args.output / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.output / "report.md").write_text(inverted.summary_markdown(outcome) + "\n")
    if outcome.pictures:
        (args.output / "grids").mkdir(exist_ok=True)
        for name, picture in outcome.pictures.items():
            picture.save(args.output / "grids" / f"{name}.png")
    if args.update:
        _update_ranges(files, outcome)
    moving = [a.name for a in outcome.assessments if a.moves()]
    removing = [a.name for a in outcome.assessments if a.removes()]
    print(f"wrote report.md for {len(entries)} directions on {outcome.faces} inverted faces to {args.output}; "
          f"adding their attribute: {', '.join(moving) or 'none'}; removing it: {', '.join(removing) or 'none'}"
          + ("; stored the ranges measured here in the files" if args.update else ""))
    return 0
