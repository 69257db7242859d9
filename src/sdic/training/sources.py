"""Reading the networks a stage starts from (generator, e4e encoder, SDIC), in any supported format.

Supported: our ``.safetensors`` files (kinds ``stylegan2``, ``e4e``, ``sdic``;
they carry their model configuration) and the authors' pickles read by
:func:`sdic.checkpoints.read_checkpoint` (rosinality StyleGAN2, e4e, SDIC).
The ``.pt`` files our trainers write in those layouts carry their
configuration too (``sdic_config``); for other authors' files the
configuration is inferred (the faces/cars presets), and a custom architecture
has to be described with ``model:`` in the training configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..checkpoints import CheckpointError, load_into, read_checkpoint
from ..config import SDICConfig


@dataclass
class Source:
    path: str
    kind: str
    config: SDICConfig | None
    tensors: dict[str, torch.Tensor]

    def part(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors under ``prefix`` with the prefix removed."""
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def read_source(path: str | Path, kinds: tuple[str, ...], what: str) -> Source:
    """Read ``path`` and check it is one of ``kinds``."""
    checkpoint = read_checkpoint(path)
    if checkpoint.kind not in kinds:
        raise CheckpointError(f"{path}: a {checkpoint.kind} file; {what} must be one of: {', '.join(kinds)}")
    return Source(str(path), checkpoint.kind, checkpoint.config, dict(checkpoint.tensors))


def load_part(module: nn.Module, source: Source, prefix: str) -> None:
    """Load the ``prefix`` tensors of a source into ``module`` with a clear error on mismatch."""
    tensors = source.part(prefix)
    if not tensors:
        raise CheckpointError(f"{source.path}: no '{prefix}' tensors")
    try:
        load_into(module, tensors, source.path)
    except CheckpointError as error:
        raise CheckpointError(
            f"{error}. If the file holds a custom architecture, describe it with `model:` in the "
            "training configuration (our .safetensors exports carry it automatically)") from None


def load_arcface_body(encoder: nn.Module, path: str | Path) -> int:
    """Initialise the encoder's input layer and IR-SE body from an ArcFace IR-SE50 file (as e4e does).

    Returns the number of tensors copied; only tensors whose names and shapes match are used.
    """
    checkpoint = read_checkpoint(path)
    if checkpoint.kind != "ir_se50":
        raise CheckpointError(f"{path}: expected an IR-SE50 (ArcFace) file, got a {checkpoint.kind} file")
    own = encoder.state_dict()
    chosen = {k: v for k, v in checkpoint.tensors.items()
              if k.startswith(("input_layer.", "body.")) and k in own and own[k].shape == v.shape}
    if not chosen:
        raise CheckpointError(f"{path}: no IR-SE50 tensor fits this encoder (different widths?)")
    encoder.load_state_dict(chosen, strict=False)
    return len(chosen)
