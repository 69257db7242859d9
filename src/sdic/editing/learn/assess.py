"""Does an edit do what it says? Scores of edited samples over a range of factors.

For sampled codes ``w`` and each factor ``f`` the images of ``w + f * n`` are
compared with those of ``w`` (factor 0):

* ``target_mean``: mean target score (probability, or value for numbers);
* ``reached``: probability targets: of the samples that started on the other
  side of 0.5, the fraction the edit brought across (> 0.5 for ``f > 0``, < 0.5
  for ``f < 0``); numbers: the fraction moved by at least one label std in the
  edit's direction;
* ``others``: per other attribute, the mean absolute change: probability
  (binary), total-variation distance of the class distribution (category),
  change in label stds (number); ``others_max`` is the largest of them;
* ``mse`` (on [-1, 1]), ``border_mse`` (the outer ``border`` fraction of the
  image: the plain background of the faces data, which no face edit should
  touch) and optionally LPIPS, edited vs. unedited.

The *useful factor range* walks outwards from 0 on each side and keeps a
factor while the target moves monotonically the right way and
``others_max <= max_side_effect``; it stops at the first factor that reaches
``reach`` of the samples (enough edit) or before the first one that fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from ...errors import InputError
from ...images import tensor_to_pil
from .classifier import AttributeSpec, ClassifierConfig
from .interfacegan import GeneratorLike, Target, render

ImageDistance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Scoring(Protocol):
    """What assessment needs from a classifier (:class:`~.classifier.AttributeClassifier` has it)."""

    config: ClassifierConfig

    def scores(self, images: torch.Tensor) -> dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class AssessSettings:
    """How ranges are judged."""

    max_side_effect: float = 0.25  # largest mean change of another attribute
    reach: float = 0.9  # fraction of samples on the target side that is "enough edit"
    border: float = 0.1  # width of the border ring (fraction of the image side) for border_mse
    monotone_tolerance: float = 0.02  # allowed backwards step of the target mean (probability / label std)


class SideEffects:
    """The largest change of the other attributes (``self.others``: name -> mean change) and its name."""

    others: dict[str, float]

    @property
    def others_max(self) -> float:
        return max(self.others.values(), default=0.0)

    @property
    def limited_by(self) -> str:
        return max(self.others, key=self.others.__getitem__) if self.others else ""


@dataclass
class FactorResult(SideEffects):
    """Edited vs. unedited at one factor."""

    factor: float
    target_mean: float
    reached: float
    others: dict[str, float]
    mse: float
    border_mse: float
    lpips: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "others_max": self.others_max, "others_mean": float(np.mean(list(self.others.values())))
                if self.others else 0.0}


@dataclass
class Assessment:
    """All factors of one direction and the useful range chosen from them."""

    name: str
    target: Target
    results: list[FactorResult]
    factor_range: tuple[float, float] = (0.0, 0.0)
    stops: dict[str, str] = field(default_factory=dict)  # side -> why the range ends there

    def at(self, factor: float) -> FactorResult:
        return min(self.results, key=lambda r: abs(r.factor - factor))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target.to_dict(), "factor_range": list(self.factor_range),
                "stops": self.stops, "factors": [r.to_dict() for r in self.results]}


def factor_grid(scale: float, sigmas: float = 3.0, steps: int = 13) -> list[float]:
    """Symmetric factors ``scale * linspace(-sigmas, sigmas, steps)`` (``steps`` odd: includes 0)."""
    if steps < 3 or steps % 2 == 0:
        raise InputError(f"the factor grid needs an odd number of steps, at least 3; got {steps}")
    return [round(float(v), 4) for v in np.linspace(-sigmas, sigmas, steps) * scale]


def attribute_change(spec: AttributeSpec, base: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
    """Per-sample change of one attribute in comparable units (see the module docstring)."""
    if spec.kind == "category":
        return 0.5 * (edited - base).abs().sum(-1)
    if spec.kind == "number":
        return (edited - base).abs() / spec.std
    return (edited - base).abs()


def reached_fraction(target: Target, spec: AttributeSpec, base: torch.Tensor, edited: torch.Tensor,
                     sign: float) -> float:
    """Probability targets: of the samples that started on the other side of 0.5, the fraction
    now on the edit's side (1 if none started there). Numbers: fraction moved by >= 1 label std."""
    if sign == 0:
        return 0.0
    if not target.is_probability:
        return float((sign * (edited - base) >= spec.std).float().mean())
    started = base <= 0.5 if sign > 0 else base >= 0.5
    if not started.any():
        return 1.0
    now = edited > 0.5 if sign > 0 else edited < 0.5
    return float(now[started].float().mean())


def border_mask(size: int, border: float) -> torch.Tensor:
    """Boolean [size, size] mask of the outer ring of width ``border * size``."""
    width = max(1, int(round(size * border)))
    mask = torch.ones(size, size, dtype=torch.bool)
    mask[width:size - width, width:size - width] = False
    return mask


@torch.no_grad()
def render_batched(generator: GeneratorLike, w: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([render(generator, w[i:i + batch_size]).float() for i in range(0, w.shape[0], batch_size)])


@torch.no_grad()
def assess_direction(
    generator: GeneratorLike, classifier: Scoring, name: str, direction: torch.Tensor,
    target: Target, w: torch.Tensor, factors: Sequence[float], settings: AssessSettings = AssessSettings(),
    lpips: ImageDistance | None = None, batch_size: int = 16,
) -> Assessment:
    """Score the edits ``w + f * direction`` for every ``f`` in ``factors`` against ``f = 0``."""
    config = classifier.config
    spec = config.attribute(target.attribute)
    others = [s for s in config.attributes if s.name != target.attribute]
    direction = direction.reshape(-1).to(w)
    base_images = render_batched(generator, w, batch_size)
    base = classifier.scores(base_images)
    mask = border_mask(base_images.shape[-1], settings.border).to(base_images.device)
    results = []
    for factor in factors:
        images = base_images if factor == 0 else render_batched(generator, w + factor * direction, batch_size)
        scores = base if factor == 0 else classifier.scores(images)
        squared = (images - base_images).pow(2)
        results.append(FactorResult(
            factor=float(factor),
            target_mean=float(target.score(scores).mean()),
            reached=reached_fraction(target, spec, target.score(base), target.score(scores), np.sign(factor)),
            others={s.name: float(attribute_change(s, base[s.name], scores[s.name]).mean()) for s in others},
            mse=float(squared.mean()),
            border_mse=float(squared[..., mask].mean()),
            lpips=float(lpips(images, base_images).mean()) if lpips is not None else None,
        ))
    assessment = Assessment(name, target, sorted(results, key=lambda r: r.factor))
    assessment.factor_range, assessment.stops = useful_range(assessment.results, spec, settings)
    return assessment


def useful_range(results: Sequence[FactorResult], spec: AttributeSpec,
                 settings: AssessSettings = AssessSettings()) -> tuple[tuple[float, float], dict[str, str]]:
    """(low, high) factors and, per side, why the range ends (see the module docstring)."""
    tolerance = settings.monotone_tolerance * (spec.std if spec.kind == "number" else 1.0)
    ends, stops = {}, {}
    for side, sign in (("negative", -1.0), ("positive", 1.0)):
        path = sorted((r for r in results if r.factor * sign >= 0), key=lambda r: abs(r.factor))
        end, stop = 0.0, "no factors on this side"
        previous = path[0].target_mean if path else 0.0
        for result in path:
            if result.factor == 0:
                continue
            if sign * (result.target_mean - previous) < -tolerance:
                stop = f"target stops moving at {result.factor:g}"
                break
            if result.others_max > settings.max_side_effect:
                stop = f"{result.limited_by} changes by {result.others_max:.2f} at {result.factor:g}"
                break
            end, previous = result.factor, result.target_mean
            stop = f"end of the factor grid ({result.reached:.0%} reached)"
            if result.reached >= settings.reach:
                stop = f"{result.reached:.0%} of the samples reached at {result.factor:g}"
                break
        ends[side], stops[side] = end, stop
    return (ends["negative"], ends["positive"]), stops


@torch.no_grad()
def edit_grid(generator: GeneratorLike, direction: torch.Tensor, w: torch.Tensor, factors: Sequence[float]) -> Image.Image:
    """Contact sheet: one row per code in ``w``, one column per factor (ascending)."""
    direction = direction.reshape(-1).to(w)
    return contact_sheet([render(generator, w + f * direction) for f in sorted(factors)])


def contact_sheet(columns: Sequence[torch.Tensor]) -> Image.Image:
    """Tile image batches ``[K, 3, S, S]`` side by side: row ``k`` holds image ``k`` of every column."""
    pictures = tensor_to_pil(torch.stack(list(columns), dim=1).flatten(0, 1))  # row-major: image, column
    size = pictures[0].size[0]
    sheet = Image.new("RGB", (size * len(columns), size * columns[0].shape[0]), "white")
    for index, picture in enumerate(pictures):
        sheet.paste(picture, ((index % len(columns)) * size, (index // len(columns)) * size))
    return sheet


def markdown_table(assessment: Assessment) -> str:
    """One row per factor: target, reached, side effects, image change."""
    lines = [f"#### {assessment.name} (useful factors {assessment.factor_range[0]:g} .. {assessment.factor_range[1]:g})",
             "",
             f"negative end: {assessment.stops.get('negative', '')}; positive end: {assessment.stops.get('positive', '')}",
             "",
             "| factor | target mean | reached | others mean | others max (attribute) | MSE | border MSE | LPIPS |",
             "| ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    for r in assessment.results:
        d = r.to_dict()
        lpips = f"{r.lpips:.3f}" if r.lpips is not None else "-"
        worst = f"{r.others_max:.3f} ({r.limited_by})" if r.others_max > 0 else "0"
        lines.append(f"| {r.factor:g} | {r.target_mean:.3f} | {r.reached:.2f} | {d['others_mean']:.3f} | {worst} |"
                     f" {r.mse:.4f} | {r.border_mse:.4f} | {lpips} |")
    return "\n".join(lines)
