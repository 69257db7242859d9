"""A small multi-attribute CNN that scores face images, trained on a labelled image folder.

The dataset layout is the one of ``tools/faces_dataset`` (docs/dataset.md):
``images/*.png``, ``labels.csv`` (``file`` column + numeric attributes) and
``meta.json`` (``attributes[column]``: ``type`` binary / category / number,
``categories`` for categories). A two-class category (``gender``) is treated as
binary with the second category as the positive class.

Heads: one logit per binary attribute, K logits per category, one standardised
value per number. :meth:`AttributeClassifier.scores` turns them into
probabilities (binary, category) and label units (number). Inputs are RGB
tensors in [-1, 1] of any size; they are resized (antialiased bilinear) to the
classifier's ``input_size``, which is also how the training images are made.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from ... import config_builder
from ...errors import ConfigError, InputError, MissingFileError
from ...files import save_safetensors
from ...images import load_image

FORMAT_NAME = "sdic-attribute-classifier"
DEFAULT_ATTRIBUTES = (
    "gender", "smile", "glasses", "facial_hair", "long_hair", "hat", "hair_color_group", "fatness",
)
Kind = Literal["binary", "category", "number"]
KINDS: tuple[str, ...] = get_args(Kind)
# The batch order and augmentation stream is seeded with settings.seed + this (the initial
# weights and the train/validation split use settings.seed itself).
AUGMENT_SEED_OFFSET = 1


# ------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class AttributeSpec:
    """One classifier head: a labels.csv column and how it is encoded."""

    name: str
    kind: Kind
    categories: tuple[str, ...] = ()  # category names; binary: (negative, positive) if known
    mean: float = 0.0  # number: label standardisation
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"attribute {self.name}: unknown kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.kind == "category" and len(self.categories) < 2:
            raise ConfigError(f"category attribute {self.name} needs at least two categories")

    @property
    def outputs(self) -> int:
        return len(self.categories) if self.kind == "category" else 1

    @property
    def positive(self) -> str:
        """What a high binary score means (``female`` for gender, else the attribute name)."""
        return self.categories[1] if self.kind == "binary" and len(self.categories) == 2 else self.name


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture and heads of an :class:`AttributeClassifier`."""

    attributes: tuple[AttributeSpec, ...]
    input_size: int = 64
    stem_width: int = 16  # a stride-1 conv at full input resolution (0: none)
    widths: tuple[int, ...] = (32, 64, 128, 192)  # one stride-2 stage each
    extra_convs: int = 1  # stride-1 convs after the last stage
    head_grid: int = 2  # average-pool the last map to head_grid^2 cells: the heads see where (faces are aligned)

    def attribute(self, name: str) -> AttributeSpec:
        for spec in self.attributes:
            if spec.name == name:
                return spec
        raise InputError(f"the classifier has no attribute {name!r}; it has: {', '.join(self.names)}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.attributes)

    def to_json(self) -> str:
        return config_builder.to_json(self)

    @classmethod
    def from_json(cls, text: str) -> ClassifierConfig:
        return config_builder.from_json(cls, text)


# ------------------------------------------------------------------ network
def _conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class AttributeClassifier(nn.Module):
    """Plain CNN (stem, stride-2 stages, average pool to a head_grid x head_grid grid), one linear layer for all heads."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = _conv(3, config.stem_width, 1) if config.stem_width else []
        cin = config.stem_width or 3
        for width in config.widths:
            layers += _conv(cin, width, 2)
            cin = width
        for _ in range(config.extra_convs):
            layers += _conv(cin, cin, 1)
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(config.head_grid), nn.Flatten())
        self.head = nn.Linear(cin * config.head_grid**2, sum(spec.outputs for spec in config.attributes))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Resize [-1, 1] images to the input size (antialiased bilinear)."""
        size = self.config.input_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return images

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs per attribute: logits [B] / [B, K], standardised numbers [B]."""
        flat = self.head(self.body(self.prepare(images)))
        outputs, start = {}, 0
        for spec in self.config.attributes:
            chunk = flat[:, start:start + spec.outputs]
            outputs[spec.name] = chunk if spec.kind == "category" else chunk[:, 0]
            start += spec.outputs
        return outputs

    @torch.no_grad()
    def scores(self, images: torch.Tensor, batch_size: int = 256) -> dict[str, torch.Tensor]:
        """Probabilities (binary [B], category [B, K]) and label-unit numbers [B], on the CPU."""
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in self.config.names}
        for start in range(0, images.shape[0], batch_size):
            raw = self(images[start:start + batch_size])
            for name, value in to_scores(raw, self.config).items():
                parts[name].append(value.float().cpu())
        return {name: torch.cat(values) for name, values in parts.items()}


def to_scores(raw: dict[str, torch.Tensor], config: ClassifierConfig) -> dict[str, torch.Tensor]:
    """Raw head outputs -> probabilities / label units."""
    out = {}
    for spec in config.attributes:
        value = raw[spec.name]
        if spec.kind == "binary":
            out[spec.name] = torch.sigmoid(value)
        elif spec.kind == "category":
            out[spec.name] = torch.softmax(value, dim=-1)
        else:
            out[spec.name] = value * spec.std + spec.mean
    return out


# ------------------------------------------------------------------ files
def save_classifier(model: AttributeClassifier, path: str | Path, report: dict[str, Any] | None = None) -> Path:
    """Write weights as safetensors; metadata holds the JSON config (and the training report)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT_NAME, "config": model.config.to_json(), "report": json.dumps(report or {})}
    return save_safetensors(tensors, path, metadata)


def read_classifier_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> AttributeClassifier:
    """Load a classifier written by :func:`save_classifier` (eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such classifier file")
    try:
        metadata = read_classifier_metadata(path)
    except (SafetensorError, OSError) as error:
        raise InputError(f"{path}: not an attribute classifier file (not a readable safetensors file: {error})") from None
    if metadata.get("format") != FORMAT_NAME:
        raise InputError(f"{path}: not an attribute classifier file (format {metadata.get('format')!r})")
    try:
        config = ClassifierConfig.from_json(metadata.get("config", ""))
    except ConfigError as error:
        raise ConfigError(f"{path}: invalid classifier configuration in the metadata ({error})") from None
    model = AttributeClassifier(config)
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as error:
        raise InputError(f"{path}: the weights do not fit the stored configuration ({str(error).splitlines()[0]})") from None
    return model.to(device).eval()


# ------------------------------------------------------------------ dataset
@dataclass
class LabelledImages:
    """Images preloaded as uint8 [N, 3, S, S] and their encoded labels per attribute."""

    images: torch.Tensor
    labels: dict[str, torch.Tensor]
    files: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: torch.Tensor) -> LabelledImages:
        return LabelledImages(self.images[index], {k: v[index] for k, v in self.labels.items()},
                              [self.files[i] for i in index.tolist()] if self.files else [])


def read_labels(dataset: str | Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """``labels.csv`` as (file list, column -> float array)."""
    path = Path(dataset) / "labels.csv"
    if not path.is_file():
        raise MissingFileError(f"{path}: no labels.csv (expected the layout of docs/dataset.md)")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise InputError(f"{path}: no rows")
    if "file" not in rows[0]:
        raise InputError(f"{path}: no 'file' column (expected the layout of docs/dataset.md)")
    columns = [c for c in rows[0] if c != "file"]
    values = {c: _column(path, c, [r[c] for r in rows]) for c in columns}
    return [r["file"] for r in rows], values


def _column(path: Path, name: str, cells: list[str | None]) -> np.ndarray:
    values = np.empty(len(cells), dtype=np.float64)
    for row, cell in enumerate(cells):
        try:
            values[row] = float(cell)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InputError(f"{path}: column {name!r}, row {row + 1}: not a number ({cell!r})") from None
    return values


def read_meta(dataset: str | Path) -> dict[str, Any]:
    path = Path(dataset) / "meta.json"
    if not path.is_file():
        raise MissingFileError(f"{path}: no meta.json describing the label columns")
    try:
        attributes = json.loads(path.read_text())["attributes"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise InputError(f"{path}: not a meta.json with an 'attributes' mapping ({error!r})") from None
    if not isinstance(attributes, dict):
        raise InputError(f"{path}: 'attributes' must map column names to their description")
    return attributes


def attribute_specs(meta: dict[str, Any], names: Sequence[str], labels: dict[str, np.ndarray]) -> tuple[AttributeSpec, ...]:
    """Head specifications from meta.json; numbers get the label mean/std for standardisation."""
    specs = []
    for name in names:
        if name not in meta or name not in labels:
            raise InputError(f"unknown attribute {name!r}; labels.csv/meta.json have: {', '.join(sorted(meta))}")
        info = meta[name]
        if not isinstance(info, dict) or "type" not in info:
            raise InputError(f"meta.json: attribute {name!r} needs a 'type' (binary, category or number)")
        kind, categories = info["type"], tuple(info.get("categories", ()))
        if kind == "category" and len(categories) == 2:
            kind = "binary"
        if kind == "number":
            values = labels[name]
            specs.append(AttributeSpec(name, kind, (), float(values.mean()), float(values.std() or 1.0)))
        else:
            specs.append(AttributeSpec(name, kind, categories))
    return tuple(specs)


def encode_labels(specs: Sequence[AttributeSpec], labels: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Binary -> float 0/1, category -> long index, number -> float (label units)."""
    out = {}
    for spec in specs:
        values = labels[spec.name]
        if spec.kind == "category":
            out[spec.name] = torch.from_numpy(values.astype(np.int64))
        else:
            out[spec.name] = torch.from_numpy(values.astype(np.float32))
    return out


def load_images(dataset: str | Path, files: Sequence[str], size: int, chunk: int = 512) -> torch.Tensor:
    """Decode images and resize them (antialiased bilinear, as the classifier does) to uint8 [N, 3, S, S]."""
    root = Path(dataset)
    out = torch.empty(len(files), 3, size, size, dtype=torch.uint8)
    for start in range(0, len(files), chunk):
        names = files[start:start + chunk]
        batch = [np.asarray(load_image(root / name)) for name in names]
        odd = [name for name, image in zip(names, batch) if image.shape != batch[0].shape]
        if odd:
            raise InputError(f"{root}: the images must share one size; {odd[0]} is {batch[names.index(odd[0])].shape[:2]}"
                             f", {names[0]} is {batch[0].shape[:2]}")
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float()
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start:start + len(batch)] = x.round().clamp(0, 255).to(torch.uint8)
    return out


def load_dataset(dataset: str | Path, specs: Sequence[AttributeSpec], size: int,
                 limit: int | None = None) -> LabelledImages:
    """Preload a labelled folder for the given heads."""
    files, labels = read_labels(dataset)
    if limit is not None:
        files, labels = files[:limit], {k: v[:limit] for k, v in labels.items()}
    missing = [s.name for s in specs if s.name not in labels]
    if missing:
        raise InputError(f"{dataset}: labels.csv lacks {missing}")
    return LabelledImages(load_images(dataset, files, size), encode_labels(specs, labels), files)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, S, S] -> float in [-1, 1]."""
    return images.float() / 127.5 - 1.0


# ------------------------------------------------------------------ training
@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings of :func:`train_classifier`."""

    epochs: int = 6
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    seed: int = 0
    shift: int = 4  # random translation (pixels at input size), with edge padding
    noise: float = 0.03  # Gaussian pixel noise std (in [-1, 1] units): robustness to GAN artefacts
    blur: float = 0.5  # per image, mix up to this fraction of a 3x3 box blur in (soft GAN images)


def augment(x: torch.Tensor, settings: TrainSettings, generator: torch.Generator) -> torch.Tensor:
    """Flips, small translations, mild blur and pixel noise (the attributes are invariant to them)."""
    batch = x.shape[0]
    flip = torch.rand(batch, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if settings.shift:
        s = settings.shift
        padded = F.pad(x, (s, s, s, s), mode="replicate")
        dx, dy = (int(v) for v in torch.randint(0, 2 * s + 1, (2,), generator=generator))
        x = padded[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]
    if settings.blur:
        amount = settings.blur * torch.rand(batch, 1, 1, 1, generator=generator)
        x = torch.lerp(x, F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1), amount)
    if settings.noise:
        x = x + settings.noise * torch.randn(x.shape, generator=generator)
    return x


def attribute_loss(raw: dict[str, torch.Tensor], labels: dict[str, torch.Tensor],
                   config: ClassifierConfig) -> torch.Tensor:
    """Sum over heads: BCE (binary), cross-entropy (category), MSE on standardised values (number)."""
    total = raw[config.names[0]].new_zeros(())
    for spec in config.attributes:
        value, target = raw[spec.name], labels[spec.name]
        if spec.kind == "binary":
            total = total + F.binary_cross_entropy_with_logits(value, target)
        elif spec.kind == "category":
            total = total + F.cross_entropy(value, target)
        else:
            total = total + F.mse_loss(value, (target - spec.mean) / spec.std)
    return total


def split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic (train, validation) index split."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(n * val_fraction))) if val_fraction > 0 else 0
    return order[n_val:], order[:n_val]


def train_classifier(
    data: LabelledImages, config: ClassifierConfig, settings: TrainSettings = TrainSettings(),
    device: str | torch.device = "cpu", log: Callable[[str], None] = print,
) -> tuple[AttributeClassifier, dict[str, Any]]:
    """Train on a preloaded dataset; return the model (eval mode) and a report with validation metrics."""
    torch.manual_seed(settings.seed)
    model = AttributeClassifier(config).to(device)
    train_index, val_index = split(len(data), settings.val_fraction, settings.seed)
    steps_per_epoch = max(1, math.ceil(len(train_index) / settings.batch_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.lr, total_steps=settings.epochs * steps_per_epoch, pct_start=0.15)
    g = torch.Generator().manual_seed(settings.seed + AUGMENT_SEED_OFFSET)
    start = time.time()
    for epoch in range(settings.epochs):
        model.train()
        order = train_index[torch.randperm(len(train_index), generator=g)]
        running = 0.0
        for step in range(steps_per_epoch):
            index = order[step * settings.batch_size:(step + 1) * settings.batch_size]
            x = augment(to_float(data.images[index]), settings, g).to(device)
            labels = {k: v[index].to(device) for k, v in data.labels.items()}
            loss = attribute_loss(model(x), labels, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running += float(loss.detach())
        message = f"epoch {epoch + 1}/{settings.epochs}: loss {running / steps_per_epoch:.4f} ({time.time() - start:.0f}s)"
        if len(val_index):
            metrics = evaluate(model.eval(), data.subset(val_index), device)
            message += "  " + summary_line(metrics)
        log(message)
    model.eval()
    report = {
        "train_samples": len(train_index), "val_samples": len(val_index),
        "settings": asdict(settings), "seconds": round(time.time() - start, 1),
        "validation": evaluate(model, data.subset(val_index), device) if len(val_index) else {},
    }
    return model, report


# ------------------------------------------------------------------ evaluation
@torch.no_grad()
def predict(model: AttributeClassifier, images: torch.Tensor, device: str | torch.device = "cpu",
            batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Scores of uint8 or float images (float: [-1, 1])."""
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in model.config.names}
    for start in range(0, images.shape[0], batch_size):
        x = images[start:start + batch_size]
        x = to_float(x) if x.dtype == torch.uint8 else x
        for name, value in model.scores(x.to(device)).items():
            parts[name].append(value)
    return {name: torch.cat(values) for name, values in parts.items()}


def _balanced_accuracy(predicted: torch.Tensor, target: torch.Tensor, classes: int) -> float:
    recalls = [float((predicted[target == c] == c).float().mean()) for c in range(classes) if (target == c).any()]
    return float(np.mean(recalls)) if recalls else float("nan")


def attribute_metrics(spec: AttributeSpec, score: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """accuracy + balanced accuracy (binary, category); MAE, R^2, correlation (number)."""
    if spec.kind == "number":
        error = score - target
        var = float(target.var(unbiased=False))
        corr = float(torch.corrcoef(torch.stack([score, target]))[0, 1]) if var > 0 else float("nan")
        return {"mae": float(error.abs().mean()),
                "r2": 1.0 - float(error.pow(2).mean()) / var if var > 0 else float("nan"),
                "corr": corr}
    if spec.kind == "binary":
        predicted, target, classes = (score > 0.5).long(), target.long(), 2
    else:
        predicted, classes = score.argmax(-1), spec.outputs
    return {"accuracy": float((predicted == target).float().mean()),
            "balanced_accuracy": _balanced_accuracy(predicted, target, classes)}


def evaluate(model: AttributeClassifier, data: LabelledImages, device: str | torch.device = "cpu") -> dict[str, dict[str, float]]:
    """Per-attribute metrics of the model on a labelled set."""
    scores = predict(model, data.images, device)
    return {spec.name: attribute_metrics(spec, scores[spec.name], data.labels[spec.name])
            for spec in model.config.attributes}


def summary_line(metrics: dict[str, dict[str, float]]) -> str:
    """``smile 0.97/0.96  fatness r2 0.90`` (accuracy/balanced accuracy, or R^2)."""
    parts = []
    for name, values in metrics.items():
        if "accuracy" in values:
            parts.append(f"{name} {values['accuracy']:.3f}/{values['balanced_accuracy']:.3f}")
        else:
            parts.append(f"{name} r2 {values['r2']:.3f}")
    return "  ".join(parts)


def build_config(dataset: str | Path, names: Sequence[str] = DEFAULT_ATTRIBUTES, size: int = ClassifierConfig.input_size,
                 **architecture: Any) -> ClassifierConfig:
    """Classifier configuration for a dataset's label columns (``architecture``: other fields)."""
    files, labels = read_labels(dataset)
    del files
    specs = attribute_specs(read_meta(dataset), names, labels)
    return config_builder.build(ClassifierConfig, architecture, base=ClassifierConfig(attributes=specs, input_size=size))
