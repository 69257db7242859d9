"""How the networks compute: one explicit :class:`Execution` value, set on a model in one place.

The fast ops have several formulations with equal results (up to float round-off); which one
runs is a property of the call site's situation (training or inference, CPU or GPU), so it is
chosen once, by whoever builds the model (``sdic.load`` for inference, the training stages for
training), and stored on the modules that read it, like ``nn.Module.training``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn


@dataclass(frozen=True)
class Execution:
    """The execution policy of the fast ops.

    * ``frozen``: the weights do not change, so the ops may use weights derived from them once
      (BatchNorm folded into the preceding convolution, polyphase transposed-conv kernels, the
      modulated convolutions' demodulation energy, low-precision weight copies). The derived
      weights are computed by :func:`set_execution`; set it again after changing weights.
    * ``split_batches``: networks with large activations per sample (DIPN, DICN, the generator
      after the tap) run one sample at a time. Pays on CPUs, where one sample already makes large
      matrix products and a batch only multiplies the working set; GPUs want whole batches.
    * ``per_sample_modulation``: a modulated convolution may fold the style into per-sample weights
      (one plain convolution per sample) where that touches less memory than modulating the
      activations (slower to train, so off in training).
    * ``weight_dtype``: with a frozen execution, the modulated convolutions keep a copy of their
      weights in this dtype (the autocast dtype the model runs in), cast once instead of per call.
    * ``polyphase``: with a frozen execution, kernel-4 stride-2 transposed convolutions run as one
      ordinary convolution over their output phases (``ops.conv_transpose_k4s2``: oneDNN's direct
      kernel instead of its slow backward-data one). Off for exported graphs, where the phase
      interleaving is hundreds of slicing nodes and a runtime has its own transposed convolution.
    """

    frozen: bool = False
    split_batches: bool = False
    per_sample_modulation: bool = False
    weight_dtype: torch.dtype | None = None
    polyphase: bool = True

    @classmethod
    def training(cls) -> Execution:
        """Ordinary differentiable computation, whole batches (the default of every module)."""
        return cls()

    @classmethod
    def frozen_network(cls) -> Execution:
        """A network kept frozen inside training (e4e's generator, SDIC's encoder): derived
        weights, but whole batches and activation modulation, which train faster."""
        return cls(frozen=True)

    @classmethod
    def inference(cls, device: torch.device | str, weight_dtype: torch.dtype | None = None) -> Execution:
        """Inference on ``device``: derived weights; per-sample work on CPUs (see the fields)."""
        cpu = torch.device(device).type == "cpu"
        return cls(frozen=True, split_batches=cpu, per_sample_modulation=True, weight_dtype=weight_dtype)

    @classmethod
    def export(cls) -> Execution:
        """Graphs for other runtimes (``sdic.export``): derived fp32 weights, whole batches and
        activation modulation (no Python loop over the samples, so the batch dimension stays
        dynamic), transposed convolutions as such."""
        return cls(frozen=True, polyphase=False)


TRAINING = Execution.training()


class UsesExecution:
    """Mixin for modules that read an :class:`Execution` (class default: :data:`TRAINING`).

    ``derive()`` computes the module's derived weights (:func:`set_derived`) for a frozen
    execution. They are plain tensors, not buffers: never saved, never broadcast by DDP;
    ``.to(...)`` and the like convert them with the parameters.
    """

    execution: Execution = TRAINING

    def derive(self) -> None:
        """Compute derived weights from the current ones (frozen executions only)."""

    def _apply(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        result = super()._apply(fn, *args, **kwargs)  # type: ignore[misc]
        store = self.__dict__.get("_derived")
        if store:
            self.__dict__["_derived"] = {name: fn(t) for name, t in store.items()}
        return result


def set_execution(module: nn.Module, execution: Execution) -> nn.Module:
    """Set ``execution`` on every submodule of ``module`` that reads one; returns ``module``.

    With a frozen execution each such submodule derives its weights now (under ``no_grad``);
    set it again after changing weights.
    """
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, UsesExecution):
                sub.execution = execution
                sub.__dict__["_derived"] = {}
                if execution.frozen:
                    sub.derive()
    return module


def set_derived(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Store a weight derived from ``module``'s own (see :class:`UsesExecution`)."""
    module.__dict__.setdefault("_derived", {})[name] = value.detach()


def derived(module: nn.Module, name: str) -> torch.Tensor | None:
    """The derived weight ``name``, if the module's execution is frozen and derived it."""
    if not module.execution.frozen:  # type: ignore[attr-defined]
        return None
    return module.__dict__.get("_derived", {}).get(name)


# ------------------------------------------------------------------ per-sample inference
_Forward = TypeVar("_Forward", bound=Callable)


def _split(value: object, batch: int, start: int, stop: int) -> object:
    """``value`` cut to samples ``start:stop`` where it carries the batch (tensors, lists of them)."""
    if isinstance(value, torch.Tensor):
        return value[start:stop] if value.ndim and value.shape[0] == batch else value
    if isinstance(value, (list, tuple)):
        return type(value)(_split(v, batch, start, stop) for v in value)
    return value


def _join(parts: list) -> object:
    if isinstance(parts[0], torch.Tensor):
        return torch.cat(parts)
    return type(parts[0])(_join(list(group)) for group in zip(*parts))


def micro_batched(size: int) -> Callable[[_Forward], _Forward]:
    """Decorator: with ``execution.split_batches``, ``forward`` runs on chunks of at most ``size``.

    For the forward of a :class:`UsesExecution` module with large activations per sample. The
    first argument decides the batch size; arguments (and items of list arguments) whose first
    dimension equals it are split, the others passed whole.
    """

    def decorate(forward: _Forward) -> _Forward:
        @functools.wraps(forward)
        def run(self: nn.Module, first: torch.Tensor, *args: object, **kwargs: object) -> object:
            batch = first.shape[0]
            if not self.execution.split_batches or batch <= size:  # type: ignore[attr-defined]
                return forward(self, first, *args, **kwargs)
            parts = []
            for start in range(0, batch, size):
                stop = min(start + size, batch)
                chunk_args = _split((first, *args), batch, start, stop)
                chunk_kwargs = {k: _split(v, batch, start, stop) for k, v in kwargs.items()}
                parts.append(forward(self, *chunk_args, **chunk_kwargs))
            return _join(parts)

        return run  # type: ignore[return-value]

    return decorate
