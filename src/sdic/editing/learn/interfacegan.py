"""InterFaceGAN (Shen et al., CVPR 2020): a linear attribute boundary in W, its unit normal is the edit.

Procedure:

1. sample ``z ~ N(0, I)``, map to ``w`` (optionally truncated), render ``G(w)``
   (the same ``w`` on every W+ row, the generator's fixed noise);
2. score every image with the attribute classifier; a *target* turns the
   scores into one number per image (a binary probability, one category's
   probability, or a regression value);
3. keep the most confident samples, the top and bottom ``ratio`` by that
   number (binary / category targets: also only those on the correct side of
   0.5), label them +1 / -1;
4. fit a linear SVM (squared hinge, L2; or logistic regression) on their ``w``,
   with a validation split of the selected samples;
5. the boundary's unit normal, pointing towards +1, is the direction:
   ``w + factor * n`` raises the target.

Conditional manipulation: :func:`orthogonalize` removes from a direction its
components along other directions, so that moving along it leaves the other
boundaries' signed distances unchanged (InterFaceGAN Sec. 2.2).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from ...checkpoints import load_generator  # noqa: F401  (re-exported: sdic.editing.learn.load_generator)
from ...errors import InputError, MissingFileError
from ...files import save_safetensors
from ..apply import decode_metadata
from .classifier import AttributeSpec, ClassifierConfig

DIRECTION_FORMAT = "sdic-direction"
DEFAULT_TARGETS = (
    "smile", "glasses", "facial_hair", "female=gender", "blond_hair=hair_color_group:blond", "fatness",
)
Scorer = Callable[[torch.Tensor], dict[str, torch.Tensor]]


class GeneratorLike(Protocol):
    """What the sampling needs from a generator (``sdic.networks.Generator`` has it)."""

    n_latent: int

    def z_to_w(self, z: torch.Tensor) -> torch.Tensor: ...

    def fixed_noise(self) -> list[torch.Tensor]: ...

    def __call__(self, w: torch.Tensor, noise: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, Any]: ...


# ------------------------------------------------------------------ targets
@dataclass(frozen=True)
class Target:
    """One number per image to move: a binary probability, a category's probability, or a value."""

    name: str
    attribute: str
    kind: str  # the attribute's kind: binary, category, number
    category: int | None = None  # index into the categories (category targets)
    positive: str = ""  # what a high score means

    @property
    def is_probability(self) -> bool:
        return self.kind in ("binary", "category")

    @property
    def spec(self) -> str:
        """The canonical text form accepted by :func:`parse_target`."""
        source = self.attribute + (f":{self.positive}" if self.category is not None else "")
        return source if source == self.name else f"{self.name}={source}"

    def score(self, scores: dict[str, torch.Tensor]) -> torch.Tensor:
        value = scores[self.attribute]
        return value[:, self.category] if self.category is not None else value

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "spec": self.spec, "attribute": self.attribute, "kind": self.kind,
                "category": self.category, "positive": self.positive}


def parse_target(text: str, config: ClassifierConfig) -> Target:
    """``attr``, ``name=attr`` or ``name=attr:category`` (e.g. ``blond_hair=hair_color_group:blond``)."""
    name, _, rest = text.partition("=")
    attribute, _, category = (rest or name).partition(":")
    spec: AttributeSpec = config.attribute(attribute)
    if spec.kind == "category":
        if category not in spec.categories:
            raise InputError(f"target {text!r}: name a category of {attribute} "
                             f"({attribute}:{'|'.join(spec.categories)})")
        return Target(name if rest else f"{attribute}_{category}", attribute, spec.kind,
                      spec.categories.index(category), category)
    if category:
        raise InputError(f"target {text!r}: {attribute} is a {spec.kind} attribute, it has no categories")
    return Target(name, attribute, spec.kind, None, spec.positive)


def default_targets(config: ClassifierConfig) -> list[Target]:
    """The default edit set when the classifier has its attributes, else every binary/number head."""
    names = set(config.names)
    chosen = [t for t in DEFAULT_TARGETS if t.partition("=")[2].partition(":")[0] in names or t in names]
    if chosen:
        return [parse_target(t, config) for t in chosen]
    return [parse_target(s.name, config) for s in config.attributes if s.kind != "category"]


# ------------------------------------------------------------------ sampling
def render(generator: GeneratorLike, w: torch.Tensor) -> torch.Tensor:
    """Images of W codes [B, D] (the code on every W+ row, fixed noise)."""
    w_plus = w[:, None, :].expand(-1, generator.n_latent, -1)
    image, _ = generator(w_plus, generator.fixed_noise())
    return image


# The truncation centre of sample_w: the mean w of these z, the same whatever the sampling seed.
TRUNCATION_MEAN_SEED = 0
TRUNCATION_MEAN_SAMPLES = 4096


def sample_w(generator: GeneratorLike, n: int, style_dim: int, seed: int, truncation: float = 1.0,
             device: str | torch.device = "cpu", batch_size: int = 256) -> torch.Tensor:
    """``n`` mapped codes ``w`` [n, D] from seeded ``z``; truncated towards the mean if ``truncation`` < 1."""
    z = torch.randn(n, style_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = torch.cat([generator.z_to_w(z[i:i + batch_size].to(device)) for i in range(0, n, batch_size)])
        if truncation != 1.0:
            g = torch.Generator().manual_seed(TRUNCATION_MEAN_SEED)
            mean_z = torch.randn(TRUNCATION_MEAN_SAMPLES, style_dim, generator=g)
            mean = generator.z_to_w(mean_z.to(device)).mean(0, keepdim=True)
            w = mean + truncation * (w - mean)
    return w


@torch.no_grad()
def score_w(generator: GeneratorLike, scorer: Scorer, w: torch.Tensor, batch_size: int = 32,
            progress: Callable[[int, int], None] | None = None) -> dict[str, torch.Tensor]:
    """Classifier scores (on the CPU) of the images of ``w``."""
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, w.shape[0], batch_size):
        for name, value in scorer(render(generator, w[start:start + batch_size])).items():
            parts.setdefault(name, []).append(value.float().cpu())
        if progress:
            progress(min(start + batch_size, w.shape[0]), w.shape[0])
    return {name: torch.cat(values) for name, values in parts.items()}


def save_samples(path: str | Path, w: torch.Tensor, scores: dict[str, torch.Tensor], info: dict[str, Any]) -> Path:
    """Cache sampled codes and their scores (safetensors; ``info`` as JSON metadata)."""
    tensors = {"w": w.cpu().contiguous(), **{f"score.{k}": v.contiguous() for k, v in scores.items()}}
    return save_safetensors(tensors, path, {"info": json.dumps(info, sort_keys=True)})


def load_samples(path: str | Path, info: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
    """Cached (w, scores) if the cache was made with the same ``info``, else None."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            stored = json.loads((handle.metadata() or {}).get("info", "{}"))
        if stored != json.loads(json.dumps(info, sort_keys=True)):
            return None
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"{path}: not a samples cache (a safetensors file of sampled codes): {error}") from None
    return tensors["w"], {k[len("score."):]: v for k, v in tensors.items() if k.startswith("score.")}


# ------------------------------------------------------------------ fitting
@dataclass(frozen=True)
class Boundary:
    """A hyperplane ``normal . w + bias = 0`` in W (unit ``normal``) and how well it separates."""

    normal: torch.Tensor  # [D], unit norm, towards the positive side
    bias: float
    train_accuracy: float
    val_accuracy: float
    n_positive: int
    n_negative: int
    correlation: float = float("nan")  # Pearson r of normal . w and the score, all samples
    latent_std: float = float("nan")  # std of normal . w over all samples (a natural factor unit)
    confident: bool = True  # False: too few samples beyond the threshold, plain ranking used


def select_extremes(score: torch.Tensor, ratio: float, threshold: float | None = None,
                    min_fraction: float = 0.25) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Indices of the top and bottom ``ratio`` of ``score``, and whether ``threshold`` could be applied.

    With ``threshold`` only samples beyond it are kept, unless that leaves a side with less
    than ``min_fraction`` of its share: then the plain ranking is used (returned flag False).
    """
    n = score.shape[0]
    k = max(1, int(round(n * ratio)))
    order = torch.argsort(score, descending=True)
    top, bottom = order[:k], order.flip(0)[:k]
    if threshold is None:
        return top, bottom, True
    sure_top, sure_bottom = top[score[top] > threshold], bottom[score[bottom] < threshold]
    if min(len(sure_top), len(sure_bottom)) < max(2, min_fraction * k):
        return top, bottom, False
    return sure_top, sure_bottom, True


def _standardize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    mean = x.mean(0, keepdim=True)
    scale = float((x - mean).std()) or 1.0
    return (x - mean) / scale, mean, scale


def _minimize(params: list[torch.Tensor], objective: Callable[[], torch.Tensor], steps: int) -> None:
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=steps, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    optimizer.step(closure)


def fit_linear(x: torch.Tensor, y: torch.Tensor, method: str = "svm", c: float = 1.0,
               steps: int = 500) -> tuple[torch.Tensor, float]:
    """Fit ``a . x + b`` to labels ``y`` in {-1, +1}; return (a, b) in the input coordinates.

    ``svm``: L2-regularised squared-hinge loss (LIBLINEAR's default linear SVM),
    ``0.5 |a|^2 + c * sum_i weight_i * max(0, 1 - y_i (a.x_i + b))^2``;
    ``logistic``: ``0.5 |a|^2 + c * sum_i weight_i * log(1 + exp(-y_i (a.x_i + b)))``.
    Classes are weighted to equal total weight; inputs are centred and scaled by
    one global factor (which leaves the normal's direction meaningful in W).
    """
    if method not in ("svm", "logistic"):
        raise InputError(f"unknown method {method!r}; use 'svm' or 'logistic'")
    xs, mean, scale = _standardize(x.double())
    y = y.double()
    n_pos, n_neg = float((y > 0).sum()), float((y < 0).sum())
    weight = torch.where(y > 0, 0.5 * len(y) / max(n_pos, 1.0), 0.5 * len(y) / max(n_neg, 1.0))
    a = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)

    def objective() -> torch.Tensor:
        margin = y * (xs @ a + b)
        loss = torch.relu(1 - margin).pow(2) if method == "svm" else nn.functional.softplus(-margin)
        return 0.5 * a.pow(2).sum() + c * (weight * loss).sum()

    _minimize([a, b], objective, steps)
    a_x = a.detach() / scale
    return a_x.float(), float(b.detach() - (a_x * mean[0]).sum())


def fit_boundary(w: torch.Tensor, score: torch.Tensor, ratio: float = 0.2, threshold: float | None = None,
                 val_fraction: float = 0.3, method: str = "svm", c: float = 1.0, seed: int = 0) -> Boundary:
    """InterFaceGAN boundary of a target score over codes ``w`` [N, D] (see the module docstring)."""
    w, score = w.detach().float().cpu(), score.detach().float().cpu()
    top, bottom, confident = select_extremes(score, ratio, threshold)
    if min(len(top), len(bottom)) < 2:
        raise InputError(f"too few samples ({len(top)} positive, {len(bottom)} negative): sample more codes")
    x = torch.cat([w[top], w[bottom]])
    y = torch.cat([torch.ones(len(top)), -torch.ones(len(bottom))])
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(y) * val_fraction)
    val, train = order[:n_val], order[n_val:]
    a, b = fit_linear(x[train], y[train], method, c)
    norm = float(a.norm()) or 1.0
    normal, bias = a / norm, b / norm

    def accuracy(index: torch.Tensor) -> float:
        return float(((x[index] @ normal + bias > 0) == (y[index] > 0)).float().mean()) if len(index) else float("nan")

    projection = w @ normal
    return Boundary(normal, bias, accuracy(train), accuracy(val), len(top), len(bottom),
                    _pearson(projection, score), float(projection.std()), confident)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])


def orthogonalize(primary: torch.Tensor, conditions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Unit vector along ``primary`` minus its projection on the span of ``conditions`` (all [D])."""
    p = primary.reshape(-1).double()
    if conditions:
        basis = torch.stack([c.reshape(-1).double() for c in conditions], dim=1)  # [D, k]
        q, _ = torch.linalg.qr(basis)
        p = p - q @ (q.T @ p)
    norm = float(p.norm())
    if norm < 1e-6:
        raise InputError("the direction lies in the span of the conditions; nothing is left after projection")
    return (p / norm).to(primary.dtype)


# ------------------------------------------------------------------ direction files
def save_direction(path: str | Path, direction: torch.Tensor, metadata: dict[str, Any]) -> Path:
    """One direction file: tensor ``direction`` [D] and metadata (strings; non-strings as JSON)."""
    text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    text["format"] = DIRECTION_FORMAT
    return save_safetensors({"direction": direction.detach().float().cpu().reshape(-1).contiguous()}, path, text)


def load_direction(path: str | Path) -> tuple[torch.Tensor, dict[str, Any]]:
    """(direction [D], metadata with JSON values decoded) of a direction file."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such direction file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = dict(handle.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"{path}: not a direction file: not a readable safetensors file ({error})") from None
    if "direction" not in tensors:
        raise InputError(f"{path}: no 'direction' tensor")
    return tensors["direction"], {k: decode_metadata(v) for k, v in raw.items()}


def fit_targets(w: torch.Tensor, scores: dict[str, torch.Tensor], targets: Sequence[Target], ratio: float = 0.2,
                method: str = "svm", c: float = 1.0, seed: int = 0) -> dict[str, Boundary]:
    """One boundary per target (probability targets: confident samples only, threshold 0.5)."""
    return {t.name: fit_boundary(w, t.score(scores), ratio, 0.5 if t.is_probability else None,
                                 method=method, c=c, seed=seed) for t in targets}
