"""Improved precision and recall of a generator (Kynkäänniemi et al., NeurIPS 2019).

FID folds fidelity and diversity into one number: a generator whose samples got cleaner but
less varied can still gain FID. Precision (the share of generated samples that fall inside
the real data's manifold) and recall (the share of real images inside the generated
manifold) separate the two. Each manifold is the union of balls around its feature vectors,
each ball reaching the point's k-th nearest neighbour in its own set (k = 3 in the paper).
The project computes them on the same TF-Inception features as its FID.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError

__all__ = ["knn_radii", "manifold_coverage", "precision_recall"]


def _as_tensor(features) -> torch.Tensor:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or not np.isfinite(array).all():
        raise InputError(f"features must be a finite (N, D) array, got shape {array.shape}")
    return torch.from_numpy(array)


def _distances(a: torch.Tensor, b: torch.Tensor, block: int = 1024) -> torch.Tensor:
    """Euclidean distances (len(a), len(b)), in blocks so 10k x 10k stays small."""
    return torch.cat([torch.cdist(a[i:i + block], b) for i in range(0, len(a), block)])


def knn_radii(features, k: int = 3) -> torch.Tensor:
    """Distance of each point to its k-th nearest other point of the same set."""
    points = _as_tensor(features)
    if not 1 <= k < len(points):
        raise InputError(f"k = {k} needs at least k + 1 = {k + 1} points, got {len(points)}")
    # The k + 1 smallest include the point itself at distance 0.
    return _distances(points, points).kthvalue(k + 1, dim=1).values


def manifold_coverage(manifold, queries, k: int = 3) -> float:
    """Share of ``queries`` inside at least one k-NN ball of ``manifold``."""
    points, probes = _as_tensor(manifold), _as_tensor(queries)
    if points.shape[1] != probes.shape[1]:
        raise InputError(f"feature sizes differ: {points.shape[1]} and {probes.shape[1]}")
    radii = knn_radii(points, k)
    inside = (_distances(probes, points) <= radii[None, :]).any(dim=1)
    return float(inside.double().mean())


def precision_recall(real_features, fake_features, k: int = 3) -> tuple[float, float]:
    """``(precision, recall)`` of generated features against real ones, both in [0, 1]."""
    return manifold_coverage(real_features, fake_features, k), manifold_coverage(fake_features, real_features, k)
