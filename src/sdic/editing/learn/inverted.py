"""Do the directions work on *inverted* faces? Edits of real inputs, scored by the classifier.

:mod:`.assess` edits sampled codes ``w``; a user edits the inversion of a picture, whose
compensated code W' lies elsewhere in W+ and whose compensated tap feature is carried
along (:meth:`sdic.SDICModel.edit`). Here held-out faces are inverted with an SDIC model and
every direction is applied at its documented factors (the stored ``factor_range``) and over a
factor grid. Against the unedited SDIC result (factor 0) each factor reports:

* ``target_mean`` and ``change``: the target's mean score and its mean change over all faces
  (the baseline is the edit at factor 0, which is close to the inversion: ``SDICModel.edit``);
* ``change_started``: the mean change in the edit's direction of the faces that started on the
  other side of 0.5 (probability targets; numbers: of all faces, in label stds): what the edit
  does to the faces that can still gain (``+``) or lose (``-``) the attribute;
* ``reached`` and ``others`` as in :mod:`.assess`;
* ``mse`` (on [-1, 1], whole image), ``mse_face`` and ``mse_outside``: the change on the face
  region and outside it, and ``outside_ratio`` = ``mse_outside / mse_face``.

The face region is every pixel the face drawing covers. The faces data (docs/dataset.md) draw
head, hair, ears, accessories and shirt over a plain background rectangle of one colour per
face (``bg_r/g/b`` in labels.csv): a pixel of the input within ``tolerance`` of that colour is
background. No attribute of the faces data is drawn there, so an edit that changes the
background changes something it should not. The background mask is eroded by ``margin``
pixels, so that the anti-aliased silhouette edge (and a head that gets a pixel wider) does not
count as outside. Without labels the colour is the median of the image's outer one-pixel ring.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ...errors import InputError
from ...images import folder_images
from ...model import Inversion, SDICModel
from .assess import (
    AssessSettings,
    Scoring,
    SideEffects,
    attribute_change,
    contact_sheet,
    factor_grid,
    reached_fraction,
    useful_range,
)
from .interfacegan import Target

Progress = Callable[[int, int], None]

# The two criteria of the model card's target for directions (docs/default_model.md).
MOVES_THRESHOLD = 0.4  # mean probability change of the faces that started without the attribute
OUTSIDE_RATIO_LIMIT = 0.25  # outside-the-face MSE at most a quarter of the face's


@dataclass(frozen=True)
class MaskSettings:
    """How the background (outside-the-face) mask is made from the input."""

    tolerance: float = 8 / 255  # largest per-channel difference to the background colour, on [0, 1]
    margin: int = 1  # erosion of the background, in pixels of the model's input


@dataclass
class Faces:
    """Held-out face files and, when the folder has labels, their background colours in [-1, 1]."""

    paths: list[Path]
    background: torch.Tensor | None = None  # [N, 3]


@dataclass
class InvertedFactor(SideEffects):
    """Edited vs. unedited inverted faces at one factor."""

    factor: float
    target_mean: float
    change: float
    change_started: float
    reached: float
    others: dict[str, float]
    mse: float
    mse_face: float
    mse_outside: float

    @property
    def outside_ratio(self) -> float:
        return self.mse_outside / self.mse_face if self.mse_face > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "others_max": self.others_max, "limited_by": self.limited_by,
                "outside_ratio": self.outside_ratio}


@dataclass
class InvertedAssessment:
    """One direction on inverted faces: every factor, the documented ones, the range found here."""

    name: str
    target: Target
    documented: tuple[float, float]  # the stored factor range (low, high)
    results: list[InvertedFactor]
    input_mean: float  # target mean on the inputs themselves (what the reconstruction should keep)
    factor_range: tuple[float, float] = (0.0, 0.0)  # useful range measured on these faces
    stops: dict[str, str] = field(default_factory=dict)

    def at(self, factor: float) -> InvertedFactor:
        return min(self.results, key=lambda r: abs(r.factor - factor))

    @property
    def base(self) -> InvertedFactor:
        return self.at(0.0)

    def moves(self, threshold: float = MOVES_THRESHOLD, outside_limit: float = OUTSIDE_RATIO_LIMIT,
              side: int = 1) -> bool:
        """At the documented factor of ``side`` (+1: the + end, adding the attribute; -1: the - end,
        removing it): enough change of the faces that started on the other side, little outside."""
        factor = self.documented[1] if side > 0 else self.documented[0]
        result = self.at(factor)
        return (self.target.is_probability and side * factor > 0 and result.change_started >= threshold
                and result.outside_ratio <= outside_limit)

    def removes(self) -> bool:
        """:meth:`moves` at the documented - factor: the edit takes the attribute away."""
        return self.moves(side=-1)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target.to_dict(), "documented_range": list(self.documented),
                "input_mean": self.input_mean, "factor_range": list(self.factor_range), "stops": self.stops,
                "moves": self.moves(), "removes": self.removes(), "factors": [r.to_dict() for r in self.results]}


# ------------------------------------------------------------------ faces and masks
def read_faces(folder: str | Path, count: int | None = None) -> Faces:
    """The first ``count`` faces of a labelled folder (``images/`` + ``labels.csv``) or an image folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of faces")
    if count is not None and count < 1:
        raise InputError(f"the face count must be at least 1, got {count}")
    labels = folder / "labels.csv"
    if labels.is_file():
        with open(labels, newline="") as handle:
            rows = list(csv.DictReader(handle))[:count]
        paths = [folder / row["file"] for row in rows]  # "images/000000.png"
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise InputError(f"{folder}: labels.csv lists {len(missing)} missing image(s), e.g. {missing[0]}")
        background = None
        if rows and all(key in rows[0] for key in ("bg_r", "bg_g", "bg_b")):
            rgb = [[float(row[key]) for key in ("bg_r", "bg_g", "bg_b")] for row in rows]
            background = torch.tensor(rgb) / 127.5 - 1.0
        faces = Faces(paths, background)
    else:
        image_folder = folder / "images" if (folder / "images").is_dir() else folder
        faces = Faces(folder_images(image_folder)[:count])
    if not faces.paths:
        raise InputError(f"{folder}: no face images found")
    return faces


def ring_colour(images: torch.Tensor) -> torch.Tensor:
    """Per-image median colour [N, 3] of the outer one-pixel ring (the background when unlabelled)."""
    ring = torch.cat([images[..., 0, :], images[..., -1, :], images[..., 1:-1, 0], images[..., 1:-1, -1]], dim=-1)
    return ring.median(dim=-1).values


def background_mask(images: torch.Tensor, colour: torch.Tensor, settings: MaskSettings = MaskSettings()) -> torch.Tensor:
    """Boolean [N, S, S]: pixels of ``images`` ([-1, 1]) at the background ``colour`` ([N, 3]), eroded."""
    distance = (images - colour.to(images)[:, :, None, None]).abs().amax(dim=1)  # [N, S, S] on [-1, 1]
    drawn = (distance > 2 * settings.tolerance).float()[:, None]
    if settings.margin > 0:
        drawn = F.max_pool2d(drawn, 2 * settings.margin + 1, stride=1, padding=settings.margin)
    return drawn[:, 0] == 0


def face_mask(images: torch.Tensor, colour: torch.Tensor, settings: MaskSettings = MaskSettings()) -> torch.Tensor:
    """Boolean [N, S, S]: the pixels the face drawing covers (not within tolerance of the background)."""
    return background_mask(images, colour, MaskSettings(settings.tolerance, margin=0)).logical_not()


# ------------------------------------------------------------------ inversion
@torch.no_grad()
def invert_faces(model: SDICModel, paths: Sequence[Path], batch_size: int = 16,
                 progress: Progress | None = None) -> Inversion:
    """Invert ``paths`` in batches (results on the CPU)."""
    parts = []
    for start in range(0, len(paths), batch_size):
        parts.append(model.invert([str(p) for p in paths[start:start + batch_size]]).detach_cpu())
        if progress:
            progress(min(start + batch_size, len(paths)), len(paths))
    return Inversion.cat(parts)


def at_input(model: SDICModel, image: torch.Tensor) -> torch.Tensor:
    """A generator output at the model's input size (average-pooled, as the evaluation scores it)."""
    size = model.config.input_size
    return F.adaptive_avg_pool2d(image.float(), (size, size))


@torch.no_grad()
def edited_images(model: SDICModel, inv: Inversion, direction: torch.Tensor, factor: float,
                  batch_size: int = 16) -> torch.Tensor:
    """SDIC outputs of ``inv`` edited by ``factor * direction``, at the input size, on the CPU.

    Factor 0 runs the edit path too: it is the baseline of the edits (close to, not equal to,
    the inversion's image: an edit takes the tap of G(W'), the inversion's G7 that of G(W)).
    """
    parts = [at_input(model, model.edit(inv[start:start + batch_size], direction, factor).image).cpu()
             for start in range(0, len(inv), batch_size)]
    return torch.cat(parts)


def masked_mse(squared: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of ``squared`` [N, 3, S, S] over the pixels of ``mask`` [N, S, S], averaged per image
    (images whose mask is empty are left out)."""
    weights = mask[:, None].float()
    pixels = weights.sum((1, 2, 3)) * squared.shape[1]
    keep = pixels > 0
    if not keep.any():
        return float("nan")
    per_image = (squared * weights).sum((1, 2, 3))[keep] / pixels[keep]
    return float(per_image.mean())


# ------------------------------------------------------------------ assessment
def started_change(target: Target, std: float, base: torch.Tensor, edited: torch.Tensor, sign: float) -> float:
    """Mean change in the edit's direction: probabilities over the faces that started on the other
    side of 0.5 (0 if none did), numbers over all faces in label stds."""
    if sign == 0:
        return 0.0
    moved = sign * (edited - base)
    if not target.is_probability:
        return float(moved.mean() / std)
    started = base <= 0.5 if sign > 0 else base >= 0.5
    return float(moved[started].mean()) if started.any() else 0.0


@torch.no_grad()
def assess_inverted(
    model: SDICModel, classifier: Scoring, inv: Inversion, name: str, direction: torch.Tensor, target: Target,
    factors: Sequence[float], documented: tuple[float, float], masks: tuple[torch.Tensor, torch.Tensor],
    settings: AssessSettings = AssessSettings(), batch_size: int = 16,
    keep: dict[float, torch.Tensor] | None = None, keep_rows: int = 0,
) -> InvertedAssessment:
    """Score ``inv`` edited along ``direction`` at ``factors`` (plus 0 and the documented ones).

    ``masks`` = (face, outside) boolean [N, S, S] at the input size. ``keep``, if given,
    receives the first ``keep_rows`` edited images per factor (for a picture).
    """
    config = classifier.config
    spec = config.attribute(target.attribute)
    others = [s for s in config.attributes if s.name != target.attribute]
    direction = direction.reshape(-1).float()
    face, outside = masks
    base_images = edited_images(model, inv, direction, 0.0, batch_size)
    base = classifier.scores(base_images)
    base_target = target.score(base)
    grid = sorted({0.0, *map(float, factors), *map(float, documented)})
    results = []
    for factor in grid:
        images = base_images if factor == 0 else edited_images(model, inv, direction, factor, batch_size)
        scores = base if factor == 0 else classifier.scores(images)
        after = target.score(scores)
        squared = (images - base_images).pow(2)
        sign = float(np.sign(factor))
        results.append(InvertedFactor(
            factor=factor,
            target_mean=float(after.mean()),
            change=float((after - base_target).mean()),
            change_started=started_change(target, spec.std, base_target, after, sign),
            reached=reached_fraction(target, spec, base_target, after, sign),
            others={s.name: float(attribute_change(s, base[s.name], scores[s.name]).mean()) for s in others},
            mse=float(squared.mean()),
            mse_face=masked_mse(squared, face),
            mse_outside=masked_mse(squared, outside),
        ))
        if keep is not None and keep_rows > 0:
            keep[factor] = images[:keep_rows]
    input_mean = float(target.score(classifier.scores(inv.input.float())).mean())
    assessment = InvertedAssessment(name, target, documented, results, input_mean)
    assessment.factor_range, assessment.stops = useful_range(results, spec, settings)
    return assessment


def masks_for(inv: Inversion, faces: Faces, settings: MaskSettings = MaskSettings()) -> tuple[torch.Tensor, torch.Tensor]:
    """(face, outside) masks from the inputs the model saw and the faces' background colours."""
    images = inv.input.float().cpu()
    colour = faces.background if faces.background is not None else ring_colour(images)
    return face_mask(images, colour, settings), background_mask(images, colour, settings)


def default_factors(latent_std: float, documented: tuple[float, float], sigmas: float = 3.0,
                    steps: int = 13) -> list[float]:
    """The assessment's sigma grid (:func:`.assess.factor_grid`) and the documented factors."""
    return sorted({*factor_grid(latent_std, sigmas, steps), *documented})


@dataclass
class InvertedRun:
    """Everything :func:`run_inverted` measured."""

    faces: int
    assessments: list[InvertedAssessment]
    seconds_invert: float
    seconds_assess: float
    mask_fraction: dict[str, float]  # mean share of the image: face, outside
    pictures: dict[str, Image.Image] = field(default_factory=dict)  # grid per direction

    def to_dict(self) -> dict[str, Any]:
        return {"faces": self.faces, "seconds_invert": self.seconds_invert, "seconds_assess": self.seconds_assess,
                "mask_fraction": self.mask_fraction, "criteria": {
                    "moves_threshold": MOVES_THRESHOLD, "outside_ratio_limit": OUTSIDE_RATIO_LIMIT},
                "moving": [a.name for a in self.assessments if a.moves()],
                "removing": [a.name for a in self.assessments if a.removes()],
                "directions": [a.to_dict() for a in self.assessments]}


@dataclass(frozen=True)
class DirectionToAssess:
    """A direction vector, what it should move, its factor unit and its documented range."""

    name: str
    vector: torch.Tensor
    target: Target
    latent_std: float
    documented: tuple[float, float]


def run_inverted(
    model: SDICModel, classifier: Scoring, faces: Faces, directions: Sequence[DirectionToAssess],
    sigmas: float = 3.0, steps: int = 13, factors: Sequence[float] | None = None,
    settings: AssessSettings = AssessSettings(), mask_settings: MaskSettings = MaskSettings(),
    batch_size: int = 16, grid_rows: int = 4, invert_progress: Progress | None = None,
    direction_done: Callable[[InvertedAssessment], None] | None = None,
) -> InvertedRun:
    """Invert ``faces`` once, then assess every direction on them (see the module docstring)."""
    start = time.perf_counter()
    inv = invert_faces(model, faces.paths, batch_size, invert_progress)
    seconds_invert = time.perf_counter() - start
    face, outside = masks_for(inv, faces, mask_settings)
    fractions = {"face": float(face.float().mean()), "outside": float(outside.float().mean())}
    assessments, pictures = [], {}
    start = time.perf_counter()
    for entry in directions:
        grid = sorted({*factors, *entry.documented}) if factors else default_factors(
            entry.latent_std, entry.documented, sigmas, steps)
        kept: dict[float, torch.Tensor] = {}
        result = assess_inverted(model, classifier, inv, entry.name, entry.vector, entry.target, grid,
                                 entry.documented, (face, outside), settings, batch_size, kept, grid_rows)
        assessments.append(result)
        if grid_rows > 0:
            pictures[entry.name] = sweep_picture(inv.input[:grid_rows].float(), kept)
        if direction_done:
            direction_done(result)
    return InvertedRun(len(faces.paths), assessments, seconds_invert, time.perf_counter() - start,
                       fractions, pictures)


# ------------------------------------------------------------------ reports
def sweep_picture(inputs: torch.Tensor, edited: dict[float, torch.Tensor]) -> Image.Image:
    """Rows: faces; columns: the input, then the edited SDIC results by ascending factor."""
    return contact_sheet([inputs] + [edited[f] for f in sorted(edited)])


def summary_markdown(run: InvertedRun) -> str:
    """One row per direction at its documented + factor, then one table per direction."""
    lines = [
        f"# Directions on {run.faces} inverted faces", "",
        f"Inversion {run.seconds_invert:.0f} s, assessment {run.seconds_assess:.0f} s. Face region: "
        f"{run.mask_fraction['face']:.0%} of the image, outside (background, eroded): "
        f"{run.mask_fraction['outside']:.0%}. `moves`: change of the faces that started without the "
        f"attribute >= {MOVES_THRESHOLD:g} and outside/face MSE <= {OUTSIDE_RATIO_LIMIT:g} at the documented "
        "+ factor; `removes`: the same for the faces that started with it, at the documented - factor.", "",
        "| direction | documented + factor | input mean | before | after | mean change | change (started without) "
        "| reached | worst other | outside / face MSE | range on inverted faces | moves | removes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- | --- | --- |",
    ]
    for a in run.assessments:
        r, high = a.at(a.documented[1]), a.documented[1]
        lines.append(
            f"| {a.name} | {high:g} | {a.input_mean:.3f} | {a.base.target_mean:.3f} | {r.target_mean:.3f} | "
            f"{r.change:+.3f} | {r.change_started:+.3f} | {r.reached:.2f} | {r.others_max:.2f} ({r.limited_by}) | "
            f"{r.outside_ratio:.3f} | {a.factor_range[0]:g} .. {a.factor_range[1]:g} | "
            f"{'yes' if a.moves() else 'no'} | {_removal(a)} |")
    lines += ["", "Numbers (`fatness`): changes in label standard deviations. Grids: `grids/<name>.png` "
              "(rows: faces; columns: input, then the factors ascending).", ""]
    for a in run.assessments:
        lines += [factor_table(a), ""]
    return "\n".join(lines)


def _removal(a: InvertedAssessment) -> str:
    """``yes``/``no`` and the change of the faces that started with the attribute, at the documented - factor."""
    if a.documented[0] >= 0:
        return "no (no - range)"
    r = a.at(a.documented[0])
    return f"{'yes' if a.removes() else 'no'} ({r.change_started:+.3f} at {a.documented[0]:g})"


def factor_table(a: InvertedAssessment) -> str:
    lines = [f"#### {a.name} (documented {a.documented[0]:g} .. {a.documented[1]:g}; on inverted faces "
             f"{a.factor_range[0]:g} .. {a.factor_range[1]:g}: {a.stops.get('negative', '')}; "
             f"{a.stops.get('positive', '')})", "",
             "| factor | target mean | mean change | change (started other side) | reached | others max | MSE "
             "| face MSE | outside MSE | outside / face |",
             "| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for r in a.results:
        lines.append(f"| {r.factor:g} | {r.target_mean:.3f} | {r.change:+.3f} | {r.change_started:+.3f} | "
                     f"{r.reached:.2f} | {r.others_max:.3f} ({r.limited_by}) | {r.mse:.4f} | {r.mse_face:.4f} | "
                     f"{r.mse_outside:.4f} | {r.outside_ratio:.3f} |")
    return "\n".join(lines)
