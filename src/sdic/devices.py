"""Checking a device name before anything is moved to it.

``torch.device("gpu")`` or ``model.to("cuda")`` on a machine without CUDA fail deep inside
torch (an ``AssertionError`` with a 30-line traceback); :func:`resolve_device` answers in one
line, listing the devices this machine has.
"""

from __future__ import annotations

import warnings

import torch

from .errors import SDICError


class DeviceError(SDICError, ValueError):
    """A device that does not exist on this machine or in this PyTorch build."""


def available_devices() -> list[str]:
    """Devices usable here: ``cpu``, then ``cuda:N`` / ``mps`` / ``xpu:N`` when present."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        found += [f"xpu:{i}" for i in range(xpu.device_count())]
    return found


def _backend_available(kind: str) -> bool:
    if kind == "cpu":
        return True
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        return mps is not None and mps.is_available()
    module = getattr(torch, kind, None)
    return module is not None and hasattr(module, "is_available") and module.is_available()


def _count(kind: str) -> int:
    module = getattr(torch, kind, None)
    return module.device_count() if module is not None and hasattr(module, "device_count") else 1


def _why(kind: str) -> str:
    if kind == "cuda" and torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return f"this PyTorch, {torch.__version__}, is built without CUDA"
    if kind == "cuda":
        return "no CUDA GPU was found"
    return f"this machine or PyTorch {torch.__version__} has no {kind} device"


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device` if it exists here, else a :class:`DeviceError`.

    An index-free name (``cuda``) stays index-free, as torch treats it (the current device).
    """
    available = ", ".join(available_devices())
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        hint = " (NVIDIA GPUs are 'cuda' or 'cuda:N', Apple GPUs 'mps')" if str(device).lower() == "gpu" else ""
        raise DeviceError(f"unknown device {str(device)!r}{hint}; devices available here: {available}") from None
    kind = parsed.type
    if not _backend_available(kind):
        raise DeviceError(f"device {str(device)!r} is not available ({_why(kind)}); devices available here: {available}")
    if parsed.index is not None and kind != "cpu" and parsed.index >= _count(kind):
        raise DeviceError(f"device {str(device)!r} does not exist; devices available here: {available}")
    return parsed


def has_fast_bf16(device: torch.device) -> bool:
    """Whether bf16 arithmetic is native on ``device`` (AVX-512 BF16/AMX CPUs, Ampere+ GPUs).

    On other CPUs oneDNN emulates bf16, which makes bf16 autocast several times slower than
    fp32 (measured on an AVX2-only EPYC: a StyleGAN2 training step took >5x longer).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return True


def warn_if_slow_bf16(device: torch.device, what: str) -> None:
    """One warning when ``what`` asks for bf16 where it is emulated (slow, not wrong)."""
    if not has_fast_bf16(device):
        warnings.warn(f"{what}: this {device.type} has no native bf16 (no AVX-512 BF16/AMX); bf16 is "
                      f"emulated and slower than fp32 here", stacklevel=3)
