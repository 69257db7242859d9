"""FFHQ face alignment (the recipe Karras et al. used to build the FFHQ dataset).

Steps: an oriented square ("quad") is derived from the eye centres and mouth corners; the photo is
shrunk if the quad is much larger than the output, cropped around the quad, reflect-padded with a
blurred, median-faded blend where the quad leaves the photo, then the quad is resampled to a
``transform_size`` square (4096 in the recipe) and downsized with Lanczos antialiasing.

Besides the aligned image, :class:`FFHQTransform` records where the aligned square lies in the
original photo, so that coordinates and edited pixels can be mapped back (see :mod:`.paste`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .landmarks import (
    LEFT_EYE,
    MOUTH_LEFT,
    MOUTH_RIGHT,
    RIGHT_EYE,
    FaceLandmarks,
    ImageLike,
    detect_landmarks,
    read_rgb,
)

RECIPE_TRANSFORM_SIZE = 4096


@dataclass(frozen=True)
class FFHQTransform:
    """Where an aligned square lies in its photo.

    ``quad`` holds the photo pixel coordinates (pixel centres at integers, x then y) of the aligned
    image's outer corners in the order top-left, bottom-left, bottom-right, top-right, i.e. the
    recipe's ``quad``. ``photo_size`` is (width, height) of the photo.
    """

    quad: np.ndarray
    photo_size: tuple[int, int]

    def matrix(self, size: int) -> np.ndarray:
        """3x3 affine mapping aligned pixel coords (for a ``size`` x ``size`` image) to photo coords."""
        q = np.asarray(self.quad, dtype=np.float64)
        ax, ay = (q[3] - q[0]) / size, (q[1] - q[0]) / size
        t = q[0] + 0.5 * (ax + ay)
        return np.array([[ax[0], ay[0], t[0]], [ax[1], ay[1], t[1]], [0.0, 0.0, 1.0]])

    def inverse_matrix(self, size: int) -> np.ndarray:
        """3x3 affine mapping photo pixel coords to aligned pixel coords of a ``size`` image."""
        return np.linalg.inv(self.matrix(size))

    def to_photo(self, points: np.ndarray, size: int) -> np.ndarray:
        """Map (N, 2) aligned pixel coordinates to photo coordinates."""
        return _apply(self.matrix(size), points)

    def to_aligned(self, points: np.ndarray, size: int) -> np.ndarray:
        """Map (N, 2) photo pixel coordinates to aligned coordinates of a ``size`` image."""
        return _apply(self.inverse_matrix(size), points)

    @property
    def scale(self) -> float:
        """Side length of the aligned square in photo pixels (the recipe's ``qsize``)."""
        return float(np.hypot(*(self.quad[3] - self.quad[0])))


@dataclass(frozen=True)
class AlignedFace:
    """An FFHQ-aligned face: the image, its transform and the photo's landmarks."""

    image: Image.Image
    transform: FFHQTransform
    landmarks: FaceLandmarks

    @property
    def aligned_landmarks(self) -> np.ndarray:
        """The 68 landmarks in aligned-image pixel coordinates."""
        return self.transform.to_aligned(self.landmarks.points, self.image.width)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x, y = pts[:, :1], pts[:, 1:]
    return x * matrix[:2, 0] + y * matrix[:2, 1] + matrix[:2, 2]


def ffhq_quad(points: np.ndarray) -> tuple[np.ndarray, float]:
    """The recipe's oriented crop square from 68 landmarks: (quad (4, 2), qsize)."""
    eye_left = points[LEFT_EYE].mean(0)
    eye_right = points[RIGHT_EYE].mean(0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (points[MOUTH_LEFT] + points[MOUTH_RIGHT]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x = x / np.hypot(*x)
    x = x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2)


@dataclass
class _Work:
    """The image being prepared and how its continuous coords map to the photo's.

    photo_edge = edge * ``scale`` + ``offset``, where edge coords put pixel i's centre at i + 0.5.
    """

    image: Image.Image
    quad: np.ndarray
    qsize: float
    scale: np.ndarray
    offset: np.ndarray


def _shrink(w: _Work, output_size: int) -> None:
    shrink = int(np.floor(w.qsize / output_size * 0.5))
    if shrink <= 1:
        return
    width, height = w.image.size
    new_size = (int(np.rint(width / shrink)), int(np.rint(height / shrink)))
    w.image = w.image.resize(new_size, Image.Resampling.LANCZOS)
    w.scale = w.scale * np.array([width / new_size[0], height / new_size[1]])
    w.quad = w.quad / shrink
    w.qsize = w.qsize / shrink


def _border(qsize: float) -> int:
    return max(int(np.rint(qsize * 0.1)), 3)


def _bounds(quad: np.ndarray) -> tuple[int, int, int, int]:
    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])


def _crop(w: _Work) -> None:
    border = _border(w.qsize)
    x0, y0, x1, y1 = _bounds(w.quad)
    width, height = w.image.size
    box = (max(x0 - border, 0), max(y0 - border, 0), min(x1 + border, width), min(y1 + border, height))
    if box[2] - box[0] < width or box[3] - box[1] < height:
        w.image = w.image.crop(box)
        w.quad = w.quad - box[:2]
        w.offset = w.offset + np.array(box[:2]) * w.scale


def _pad_amounts(w: _Work) -> tuple[np.ndarray, bool]:
    border = _border(w.qsize)
    x0, y0, x1, y1 = _bounds(w.quad)
    width, height = w.image.size
    pad = np.maximum([-x0 + border, -y0 + border, x1 - width + border, y1 - height + border], 0)
    needed = pad.max() > border - 4
    return np.maximum(pad, int(np.rint(w.qsize * 0.3))), bool(needed)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of HxWxC float32 (radius 4 sigma, half-sample symmetric borders)."""
    radius = int(4.0 * sigma + 0.5)
    if radius < 1:
        return img.copy()
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel = torch.from_numpy((taps / taps.sum()).astype(np.float32))
    padded = np.pad(img, ((radius, radius), (radius, radius), (0, 0)), mode="symmetric")
    x = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))[:, None]
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    return x[:, 0].numpy().transpose(1, 2, 0)


def _pad(w: _Work) -> None:
    pad, needed = _pad_amounts(w)
    if not needed:
        return
    left, top, right, bottom = (int(p) for p in pad)
    img = np.pad(np.float32(w.image), ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, wd, _ = img.shape
    y, x, _ = np.ogrid[:h, :wd, :1]
    x, y = np.float32(x), np.float32(y)
    mask = np.maximum(
        1.0 - np.minimum(x / left, (wd - 1 - x) / right),
        1.0 - np.minimum(y / top, (h - 1 - y) / bottom),
    )
    img += (gaussian_blur(img, w.qsize * 0.02) - img) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    img += (np.median(img, axis=(0, 1)) - img) * np.clip(mask, 0.0, 1.0)
    w.image = Image.fromarray(np.uint8(np.clip(np.rint(img), 0, 255)), "RGB")
    w.quad = w.quad + np.array([left, top])
    w.offset = w.offset - np.array([left, top]) * w.scale


def _resample(w: _Work, output_size: int, transform_size: int) -> Image.Image:
    data = tuple((w.quad + 0.5).flatten())
    out = w.image.transform(
        (transform_size, transform_size), Image.Transform.QUAD, data, Image.Resampling.BILINEAR
    )
    if output_size < transform_size:
        out = out.resize((output_size, output_size), Image.Resampling.LANCZOS)
    return out


def align_landmarks(
    image: ImageLike,
    landmarks: FaceLandmarks,
    output_size: int = 1024,
    transform_size: int = RECIPE_TRANSFORM_SIZE,
    padding: bool = True,
) -> AlignedFace:
    """FFHQ-align one face given its 68 landmarks (photo pixel coordinates)."""
    rgb, _ = read_rgb(image)
    quad, qsize = ffhq_quad(landmarks.points)
    w = _Work(Image.fromarray(rgb), quad.copy(), qsize, np.ones(2), np.zeros(2))
    _shrink(w, output_size)
    _crop(w)
    if padding:
        _pad(w)
    out = _resample(w, output_size, max(transform_size, output_size))
    photo_quad = (w.quad + 0.5) * w.scale + w.offset - 0.5
    transform = FFHQTransform(quad=photo_quad, photo_size=(rgb.shape[1], rgb.shape[0]))
    return AlignedFace(image=out, transform=transform, landmarks=landmarks)


def align_faces(
    image: ImageLike,
    output_size: int = 1024,
    transform_size: int = RECIPE_TRANSFORM_SIZE,
    padding: bool = True,
    max_faces: int | None = None,
    upsample: int | None = None,
) -> list[AlignedFace]:
    """Detect and FFHQ-align every face (largest crop first; at most ``max_faces``).

    Raises :class:`~sdic.alignment.landmarks.NoFaceFoundError` if the photo has no face.
    """
    rgb, label = read_rgb(image)
    found = detect_landmarks(rgb, upsample, source=label)
    faces = sorted(found, key=lambda f: -ffhq_quad(f.points)[1])
    return [align_landmarks(rgb, f, output_size, transform_size, padding) for f in faces[:max_faces]]


def align_face(
    image: ImageLike,
    output_size: int = 1024,
    transform_size: int = RECIPE_TRANSFORM_SIZE,
    padding: bool = True,
    upsample: int | None = None,
) -> AlignedFace:
    """Detect and FFHQ-align the largest face of a photo."""
    return align_faces(image, output_size, transform_size, padding, 1, upsample)[0]
