"""Face alignment (FFHQ recipe, dlib landmarks) and paste-back of edited aligned faces."""

from .ffhq import (
    AlignedFace,
    FFHQTransform,
    align_face,
    align_faces,
    align_landmarks,
    ffhq_quad,
)
from .landmarks import (
    FaceLandmarks,
    MissingModelError,
    NoFaceFoundError,
    detect_landmarks,
)
from .paste import face_mask, paste_back

__all__ = [
    "AlignedFace",
    "FFHQTransform",
    "FaceLandmarks",
    "MissingModelError",
    "NoFaceFoundError",
    "align_face",
    "align_faces",
    "align_landmarks",
    "detect_landmarks",
    "face_mask",
    "ffhq_quad",
    "paste_back",
]
