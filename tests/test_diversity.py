"""Sample diversity (sdic.metrics.diversity): pair drawing, hand-checkable sets, named errors."""

from __future__ import annotations

import pytest
import torch

from sdic.errors import InputError
from sdic.metrics import LPIPS
from sdic.metrics.diversity import pairwise_lpips, random_pairs


def test_pairs_are_distinct_in_range_and_seeded():
    pairs = random_pairs(5, 2000, seed=3)
    assert pairs.shape == (2000, 2)
    assert bool((pairs[:, 0] != pairs[:, 1]).all())
    assert int(pairs.min()) == 0 and int(pairs.max()) == 4
    assert torch.equal(pairs, random_pairs(5, 2000, seed=3))
    assert not torch.equal(pairs, random_pairs(5, 2000, seed=4))
    # every ordered pair of distinct indices is drawn about equally often (20 of them)
    counts = torch.bincount(pairs[:, 0] * 5 + pairs[:, 1], minlength=25).reshape(5, 5)
    assert counts.diagonal().sum() == 0
    off = counts[~torch.eye(5, dtype=torch.bool)]
    assert int(off.min()) > 60 and int(off.max()) < 140


def test_a_collapsed_set_scores_zero():
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    assert pairwise_lpips(image.expand(6, -1, -1, -1).contiguous(), pairs=20) == pytest.approx(0.0, abs=1e-7)


def test_two_images_score_their_own_distance():
    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(1, 3, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    expected = float(LPIPS("alex")(a, b))
    assert expected > 0.05
    # every pair of a two-image set is (a, b) or (b, a); LPIPS is symmetric
    assert pairwise_lpips(torch.cat([a, b]), pairs=7, batch_size=3) == pytest.approx(expected, rel=1e-5)


def test_the_mean_matches_pair_by_pair_distances():
    images = torch.rand(9, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    lpips = LPIPS("alex")
    index = random_pairs(9, 25, seed=2)
    expected = sum(float(lpips(images[i:i + 1], images[j:j + 1])) for i, j in index.tolist()) / 25
    assert pairwise_lpips(images, pairs=25, seed=2, batch_size=4) == pytest.approx(expected, rel=1e-5)


def test_bad_inputs_are_named():
    with pytest.raises(InputError, match="at least 2 images, got 1"):
        pairwise_lpips(torch.zeros(1, 3, 8, 8))
    with pytest.raises(InputError, match=r"\[N, 3, H, W\]"):
        pairwise_lpips(torch.zeros(4, 1, 8, 8))
    with pytest.raises(InputError, match="NaN"):
        pairwise_lpips(torch.full((4, 3, 8, 8), float("nan")))
    with pytest.raises(InputError, match="pairs must be at least 1"):
        random_pairs(4, 0)
