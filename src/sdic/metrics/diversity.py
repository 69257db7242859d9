"""Sample diversity: the mean LPIPS distance between random pairs of a set's images.

The measure the few-shot GAN adaptation literature reports as intra-LPIPS (e.g. Ojha et al.,
CVPR 2021): a generator that collapses towards a few faces scores near 0, the real data set
sets the level to compare with. Unlike precision and recall it needs no real manifold, so it
stays informative for generators whose samples all lie outside the real features' k-NN balls.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from .lpips import get_lpips

__all__ = ["random_pairs", "pairwise_lpips"]


def random_pairs(count: int, pairs: int, seed: int = 0) -> torch.Tensor:
    """``[pairs, 2]`` indices ``(i, j)``, ``i != j``, drawn uniformly from ``range(count)``."""
    if count < 2:
        raise InputError(f"diversity needs at least 2 images, got {count}")
    if pairs < 1:
        raise InputError(f"pairs must be at least 1, got {pairs}")
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(count, (pairs,), generator=g)
    # An offset in 1..count-1 makes the second index differ from the first.
    second = (first + torch.randint(1, count, (pairs,), generator=g)) % count
    return torch.stack([first, second], dim=1)


@torch.no_grad()
def pairwise_lpips(images: torch.Tensor, pairs: int = 1000, seed: int = 0, net: str = "alex",
                   batch_size: int = 100) -> float:
    """Mean LPIPS (``net``) over ``pairs`` random pairs of ``images`` ``[N, 3, H, W]`` in [-1, 1]."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise InputError("images contain NaN or infinite values")
    index = random_pairs(len(images), pairs, seed)
    lpips = get_lpips(net, images.device)
    total = 0.0
    for start in range(0, pairs, batch_size):
        i, j = index[start:start + batch_size].T
        total += float(lpips(images[i], images[j]).sum())
    return total / pairs
