"""The evaluation protocol behind ``sdic evaluate`` (documented in docs/evaluation.md).

:func:`evaluate` is the whole loop: every image is inverted once; the e4e reconstruction
and the SDIC result are both scored against the input at the model's input size (256x256
for the authors' models; generator outputs are average-pooled to it, as in training and
the published tables). Cars are scored on their content rows only. It returns an
:class:`EvaluationReport` (per-image and mean scores, FID, timing, the grid).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from .errors import InputError, MissingFileError
from .images import content_rows_at, tensor_to_pil
from .inputs import batches, find_items, make_aligner, photos_in
from .model import Inversion, NonFiniteOutputError, SDICModel

STAGES = ("e4e", "sdic")
METRIC_LABELS = {
    "mse": "MSE ↓", "psnr": "PSNR ↑", "ssim": "SSIM ↑", "lpips_alex": "LPIPS-alex ↓",
    "lpips_vgg": "LPIPS-vgg ↓", "id_sface": "ID (SFace) ↑",
}

MetricFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def build_metrics(names: Iterable[str], device: torch.device) -> dict[str, MetricFn]:
    """Metric functions (prediction, target) -> per-image values, inputs in [-1, 1]."""
    from . import metrics

    table: dict[str, Callable[[], MetricFn]] = {
        "mse": lambda: metrics.mse,
        "psnr": lambda: metrics.psnr,
        "ssim": lambda: metrics.ssim,
        "lpips_alex": lambda: metrics.LPIPS("alex").to(device).eval(),
        "lpips_vgg": lambda: metrics.LPIPS("vgg").to(device).eval(),
        "id_sface": _identity_metric(device),
    }
    unknown = set(names) - set(table)
    if unknown:
        raise InputError(f"unknown metrics {sorted(unknown)}; choose from {sorted(table)}")
    return {name: table[name]() for name in names}


def _identity_metric(device: torch.device) -> Callable[[], MetricFn]:
    def build() -> MetricFn:
        from .metrics.identity import IdentitySimilarity

        return IdentitySimilarity().to(device).eval()

    return build


def default_metrics(model: SDICModel) -> list[str]:
    names = ["mse", "psnr", "ssim", "lpips_alex", "lpips_vgg"]
    return names + (["id_sface"] if model.config.domain == "faces" else [])


@dataclass
class EvaluationReport:
    """Per-image and mean scores for the e4e and SDIC stages, FID over the set, timing."""

    model: str
    per_image: list[dict] = field(default_factory=list)
    fid: dict[str, float] = field(default_factory=dict)
    seconds_per_image: float = float("nan")
    failures: list[str] = field(default_factory=list)
    protocol: dict = field(default_factory=dict)
    grid: Image.Image | None = field(default=None, repr=False, compare=False)  # input | e4e | SDIC | discrepancy

    def means(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for stage in STAGES:
            values: dict[str, list[float]] = {}
            for row in self.per_image:
                for metric, value in row[stage].items():
                    values.setdefault(metric, []).append(value)
            out[stage] = {m: sum(v) / len(v) for m, v in values.items()}
            if stage in self.fid:
                out[stage]["fid"] = self.fid[stage]
        return out

    def to_json(self) -> str:
        return json.dumps({
            "model": self.model, "images": len(self.per_image), "protocol": self.protocol,
            "seconds_per_image": self.seconds_per_image, "mean": self.means(), "fid": self.fid,
            "per_image": self.per_image, "failures": self.failures,
        }, indent=2)

    def to_markdown(self) -> str:
        means = self.means()
        metrics = [m for m in METRIC_LABELS if m in means["sdic"]] + (["fid"] if self.fid else [])
        labels = [METRIC_LABELS.get(m, "FID ↓") for m in metrics]
        lines = [
            f"# Evaluation of {self.model}", "",
            f"{len(self.per_image)} images, {self.seconds_per_image:.2f} s per image "
            f"(inversion, {self.protocol.get('device', 'cpu')}); protocol: docs/evaluation.md.", "",
            "| stage | " + " | ".join(labels) + " |",
            "| --- |" + " --- |" * len(labels),
        ]
        for stage in STAGES:
            cells = [_format(means[stage].get(m, math.nan)) for m in metrics]
            lines.append(f"| {stage} | " + " | ".join(cells) + " |")
        if self.failures:
            lines += ["", f"{len(self.failures)} images failed:"] + [f"- {f}" for f in self.failures]
        return "\n".join(lines) + "\n"


def _format(value: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.4f}"


def scored_views(inv: Inversion, config) -> dict[str, torch.Tensor]:
    """Target and stage outputs at the input size, cut to the content rows."""
    size = config.input_size
    top, bottom = content_rows_at(config, size)

    def at_input(image: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(image, (size, size))[:, :, top:bottom]

    return {"target": inv.input[:, :, top:bottom], "e4e": at_input(inv.initial_image),
            "sdic": at_input(inv.image)}


def score(views: dict[str, torch.Tensor], metric_fns: dict[str, MetricFn]) -> list[dict[str, dict[str, float]]]:
    """Per-image scores of both stages."""
    batch = views["target"].shape[0]
    rows: list[dict[str, dict[str, float]]] = [{stage: {} for stage in STAGES} for _ in range(batch)]
    with torch.no_grad():
        for name, fn in metric_fns.items():
            for stage in STAGES:
                values = fn(views[stage].float(), views["target"].float()).reshape(-1)
                for i in range(batch):
                    rows[i][stage][name] = float(values[i])
    return rows


def grid_row(inv: Inversion, index: int, size: int = 256) -> Image.Image:
    """input | e4e | SDIC | discrepancy, each ``size`` pixels high."""
    views = [inv.to_pil("input")[index], inv.to_pil("initial_image")[index],
             inv.to_pil("image")[index], inv.to_pil("discrepancy")[index]]
    views = [v.resize((round(size * v.width / v.height), size), Image.BILINEAR) for v in views]
    row = Image.new("RGB", (sum(v.width for v in views), size), "white")
    x = 0
    for view in views:
        row.paste(view, (x, 0))
        x += view.width
    return row


GRID_COLUMNS = ("input", "e4e", "SDIC", "discrepancy")


def stack_rows(rows: list[Image.Image], header: int = 20) -> Image.Image:
    """Stack grid rows under a header naming the columns."""
    from PIL import ImageDraw

    width = max(r.width for r in rows)
    grid = Image.new("RGB", (width, header + sum(r.height for r in rows)), "white")
    draw = ImageDraw.Draw(grid)
    column = rows[0].width / len(GRID_COLUMNS)
    for i, label in enumerate(GRID_COLUMNS):
        draw.text((i * column + 6, 4), label, fill="black")
    y = header
    for row in rows:
        grid.paste(row, (0, y))
        y += row.height
    return grid


def fid_scores(outputs: dict[str, list[torch.Tensor]], reference: torch.Tensor | str | Path,
               device: torch.device) -> dict[str, float]:
    """FID of each stage's outputs against the reference (inputs, a folder or an .npz of mu/sigma)."""
    from .metrics import (
        InceptionFeatures,
        compute_features,
        feature_statistics,
        fid_from_features,
        frechet_distance,
        load_statistics,
    )

    network = InceptionFeatures(input_range=(-1.0, 1.0)).to(device)

    def features(images: list[torch.Tensor]):
        return compute_features(torch.cat(images), network, device=device)

    if isinstance(reference, (str, Path)) and str(reference).endswith(".npz"):
        real_stats = load_statistics(reference)
        return {stage: frechet_distance(*feature_statistics(features(images)), *real_stats)
                for stage, images in outputs.items()}
    real = compute_features(reference, network, device=device)
    return {stage: fid_from_features(features(images), real) for stage, images in outputs.items()}


def save_outputs(inv: Inversion, names: list[str], folder: Path) -> None:
    """Write the e4e and SDIC results (cropped to content) for later inspection."""
    for stage, which in (("e4e", "initial_image"), ("sdic", "image")):
        (folder / stage).mkdir(parents=True, exist_ok=True)
        for name, picture in zip(names, inv.to_pil(which)):
            picture.save(folder / stage / f"{name}.png")


def timed_invert(model: SDICModel, batch) -> tuple[Inversion, float]:
    start = time.perf_counter()
    inv = model.invert(batch)
    if inv.image.device.type == "cuda":
        torch.cuda.synchronize()
    return inv, time.perf_counter() - start


def invert_finite(model: SDICModel, batch: list, failures: list[str]) -> tuple[list, Inversion | None, float]:
    """Invert a batch; on NaN/inf output, invert its images one by one and drop (and report) the bad ones.

    Returns the units kept, their inversion (None if none is left) and the inversion seconds.
    """
    try:
        inv, seconds = timed_invert(model, [unit.image for unit in batch])
        return batch, inv, seconds
    except NonFiniteOutputError as error:
        if len(batch) == 1:
            failures.append(f"{batch[0].source}: {error}")
            tqdm.write(f"skipped: {batch[0].source}: {error}")
            return [], None, 0.0
    kept, parts, total = [], [], 0.0
    for unit in batch:
        units, inv, seconds = invert_finite(model, [unit], failures)
        kept += units
        parts += [inv] if inv is not None else []
        total += seconds
    return kept, Inversion.cat(parts) if parts else None, total


@dataclass(frozen=True)
class EvaluationSettings:
    """What :func:`evaluate` scores and writes besides the report (the options of ``sdic evaluate``)."""

    metrics: tuple[str, ...] | None = None  # None: default_metrics(model)
    fid: bool = True
    reference: str | Path | None = None  # FID reference: a folder or an .npz of mu/sigma; None: the inputs
    batch_size: int = 1
    grid_rows: int = 8  # rows of the report's grid (0: none)
    align: bool = False  # FFHQ-align the largest face of each photo first (faces models)
    images_folder: Path | None = None  # also write the e4e/ and sdic/ outputs below this folder

    def check(self, model: SDICModel) -> None:
        """Refuse settings that cannot work, before any image is read."""
        if self.batch_size < 1:
            raise InputError(f"the batch size must be at least 1, got {self.batch_size}")
        if self.grid_rows < 0:
            raise InputError(f"the grid rows must be 0 or more, got {self.grid_rows}")
        if self.reference is not None and not Path(self.reference).exists():
            raise MissingFileError(f"{self.reference}: no such folder or file")
        if self.align and model.config.domain != "faces":
            raise InputError(f"alignment is for faces; this is a {model.config.domain} model")


def evaluate(model: SDICModel, inputs: Sequence[str | Path], settings: EvaluationSettings = EvaluationSettings(),
             progress: bool = True) -> EvaluationReport:
    """Invert and score every image of ``inputs`` (files, folders or globs) under the protocol.

    Unreadable images, photos without a face when aligning and images whose result has NaN/inf
    values are skipped and listed in ``report.failures``; FID's warnings (small sets) are issued as Python warnings.
    """
    settings.check(model)
    items = find_items(list(inputs))
    align = make_aligner(model.config.input_size, all_faces=False) if settings.align else None
    metric_fns = build_metrics(settings.metrics or default_metrics(model), model.device)
    report = EvaluationReport(model=str(model.source or model.config.name), protocol={
        "resolution": model.config.input_size, "device": str(model.device), "precision": model.precision,
        "metrics": list(metric_fns), "fid_reference": str(settings.reference or "inputs"),
    })
    outputs: dict[str, list[torch.Tensor]] = {stage: [] for stage in STAGES}
    targets: list[torch.Tensor] = []
    grid_rows: list[Image.Image] = []
    seconds = 0.0
    with tqdm(total=len(items), unit="img", desc="sdic evaluate", disable=not progress) as bar:
        for batch in batches(items, settings.batch_size, report.failures, bar, align):
            covered = photos_in(batch)
            batch, inv, elapsed = invert_finite(model, batch, report.failures)
            seconds += elapsed
            if inv is None:
                bar.update(covered)
                continue
            views = scored_views(inv, model.config)
            for unit, row in zip(batch, score(views, metric_fns)):
                report.per_image.append({"image": str(unit.source), **row})
            for stage in STAGES:
                outputs[stage].append(views[stage].clamp(-1, 1).cpu())
            targets.append(views["target"].cpu())
            missing = settings.grid_rows - len(grid_rows)
            grid_rows += [grid_row(inv, i) for i in range(min(len(batch), max(missing, 0)))]
            if settings.images_folder is not None:
                save_outputs(inv, [unit.name for unit in batch], settings.images_folder)
            bar.update(covered)
    if not report.per_image:
        raise InputError("no image could be read and inverted (see the skipped ones above)")
    report.seconds_per_image = seconds / len(report.per_image)
    report.grid = stack_rows(grid_rows) if grid_rows else None
    if settings.fid and len(report.per_image) < 2:
        warnings.warn("FID needs at least 2 images; skipped", stacklevel=2)
    elif settings.fid:
        report.fid = fid_scores(outputs, settings.reference or torch.cat(targets), model.device)
    return report


__all__ = [
    "EvaluationReport",
    "EvaluationSettings",
    "evaluate",
    "build_metrics",
    "default_metrics",
    "fid_scores",
    "grid_row",
    "invert_finite",
    "save_outputs",
    "score",
    "scored_views",
    "stack_rows",
    "tensor_to_pil",
    "timed_invert",
]
