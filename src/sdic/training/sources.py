"""Reading the networks a stage starts from (generator, e4e encoder, SDIC), in any supported format.

Supported: the bundled models by name (``default``), our ``.safetensors`` files (kinds ``stylegan2``, ``e4e``, ``sdic``;
they carry their model configuration) and the authors' pickles read by
:func:`sdic.checkpoints.read_checkpoint` (rosinality StyleGAN2, e4e, SDIC).
The ``.pt`` files our trainers write in those layouts carry their
configuration too (``sdic_config``); for other authors' files the
configuration is inferred (the faces/cars presets), and a custom architecture
has to be described with ``model:`` in the training configuration.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..checkpoints import Checkpoint, CheckpointError, Kind, load_into, read_checkpoint, require_kind
from ..checkpoints.bundled import resolve_source


def read_source(path_or_name: str | Path, kinds: tuple[Kind, ...], what: str) -> Checkpoint:
    """Read a file (or a bundled model by name) and check it is one of ``kinds``."""
    return require_kind(read_checkpoint(resolve_source(path_or_name)), kinds,
                        f"a file usable as {what} (kinds: {', '.join(kinds)})")


def load_part(module: nn.Module, source: Checkpoint, prefix: str) -> None:
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
    checkpoint = require_kind(read_checkpoint(path), (Kind.IR_SE50,), "an IR-SE50 (ArcFace) file")
    own = encoder.state_dict()
    chosen = {k: v for k, v in checkpoint.tensors.items()
              if k.startswith(("input_layer.", "body.")) and k in own and own[k].shape == v.shape}
    if not chosen:
        raise CheckpointError(f"{path}: no IR-SE50 tensor fits this encoder (different widths?)")
    encoder.load_state_dict(chosen, strict=False)
    return len(chosen)
