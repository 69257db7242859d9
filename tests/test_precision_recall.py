"""Improved precision and recall (sdic.metrics.precision_recall): hand-computed cases, a
brute-force twin, and the two failure modes it exists to tell apart."""

from __future__ import annotations

import numpy as np
import pytest

from sdic.errors import InputError
from sdic.metrics.precision_recall import knn_radii, manifold_coverage, precision_recall


def brute_force_radii(points: np.ndarray, k: int) -> np.ndarray:
    radii = []
    for i, point in enumerate(points):
        others = sorted(float(np.linalg.norm(point - q)) for j, q in enumerate(points) if j != i)
        radii.append(others[k - 1])
    return np.array(radii)


def test_hand_computed_1d_case():
    real = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    # k = 1 radii: 1, 1, 1, 1 and 7 (10 to 3)
    assert knn_radii(real, k=1).tolist() == [1.0, 1.0, 1.0, 1.0, 7.0]
    fake = np.array([[0.5], [5.0], [20.0]])  # inside 0's ball, inside 10's ball (5 <= 7), outside all
    assert manifold_coverage(real, fake, k=1) == pytest.approx(2 / 3)
    # fake's own k = 1 radii: 4.5, 4.5, 15; real points within: 0, 1, 2, 3 (of 0.5's ball), 10 (of 5's)
    assert manifold_coverage(fake, real, k=1) == 1.0


def test_radii_match_a_brute_force_twin():
    points = np.random.default_rng(0).normal(size=(40, 7))
    for k in (1, 3, 5):
        np.testing.assert_allclose(knn_radii(points, k).numpy(), brute_force_radii(points, k), rtol=1e-12)


def test_identical_sets_score_one_on_both():
    points = np.random.default_rng(1).normal(size=(60, 4))
    assert precision_recall(points, points) == (1.0, 1.0)


def test_mode_collapse_keeps_precision_and_loses_recall():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(200, 8))
    collapsed = real[:1] + 1e-3 * rng.normal(size=(200, 8))  # every sample near one real image
    precision, recall = precision_recall(real, collapsed)
    assert precision == 1.0 and recall <= 0.02


def test_off_manifold_samples_lose_precision_and_keep_recall():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(200, 8))
    # half the samples are real images, half are far away (noisy, off-manifold)
    fake = np.concatenate([real[::2] + 1e-3 * rng.normal(size=(100, 8)), 50.0 + rng.normal(size=(100, 8))])
    precision, recall = precision_recall(real, fake)
    assert precision == pytest.approx(0.5) and recall >= 0.9


def test_bad_inputs_are_named():
    with pytest.raises(InputError, match="k = 3 needs at least k \\+ 1 = 4 points, got 3"):
        knn_radii(np.zeros((3, 2)))
    with pytest.raises(InputError, match="feature sizes differ: 2 and 3"):
        precision_recall(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(InputError, match="finite"):
        precision_recall(np.full((5, 2), np.nan), np.zeros((5, 2)))
    with pytest.raises(InputError, match="shape"):
        precision_recall(np.zeros(5), np.zeros((5, 1)))
