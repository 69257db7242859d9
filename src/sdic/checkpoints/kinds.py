"""What a checkpoint is: its kinds (what a file holds), the record a read returns, the error.

A kind is stored by name in our format's metadata and found from the contents of the
authors' files; which parts of :class:`~sdic.SDICModel` a file of each kind holds is
:data:`KINDS`, the one table conversion, the generator readers and the error messages use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch

from ..config import SDICConfig
from ..errors import SDICError


class CheckpointError(SDICError, ValueError):
    """A checkpoint file is missing, corrupt, unsafe, of the wrong kind or does not fit."""


class Kind(str, Enum):
    """What a checkpoint file holds; a ``str`` (``Kind.E4E == "e4e"``), printed as its value."""

    SDIC = "sdic"
    E4E = "e4e"
    STYLEGAN2 = "stylegan2"
    IR_SE50 = "ir_se50"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def named(cls, name: str, source: str) -> Kind:
        """The kind called ``name`` (from a file's metadata); a clear error for an unknown one."""
        try:
            return cls(name)
        except ValueError:
            known = ", ".join(kind.value for kind in cls)
            raise CheckpointError(f"{source}: unknown model kind {name!r} (known: {known})") from None


# The state-dict prefixes of SDICModel's parts (``latent_avg`` is a buffer).
MODEL_PARTS = ("encoder.", "generator.", "dipn.", "dicn.", "latent_avg")


@dataclass(frozen=True)
class KindInfo:
    """``parts``: the SDICModel parts every file of the kind holds (none: not part of the model)."""

    parts: tuple[str, ...]
    holds: str  # what the file holds, for messages ("it holds ...")


KINDS: dict[Kind, KindInfo] = {
    Kind.SDIC: KindInfo(MODEL_PARTS, "a whole SDIC model (encoder, generator, DIPN and DICN)"),
    Kind.E4E: KindInfo(("encoder.", "generator.", "latent_avg"),
                       "an e4e encoder and generator but no DIPN/DICN; train SDIC on it with `sdic train sdic`"),
    Kind.STYLEGAN2: KindInfo(("generator.",), "only a StyleGAN2 generator"),
    Kind.IR_SE50: KindInfo((), "the ArcFace identity network used by the ID metric"),
}

GENERATOR_KINDS = tuple(kind for kind, info in KINDS.items() if "generator." in info.parts)


@dataclass
class Checkpoint:
    """A checkpoint read from disk: its kind, tensors (our names) and what was dropped."""

    kind: Kind
    tensors: dict[str, torch.Tensor]
    config: SDICConfig | None = None
    dropped: list[str] = field(default_factory=list)
    opts: dict[str, Any] = field(default_factory=dict)
    path: str = ""
    native: bool = False  # our safetensors format (its config comes from its metadata)

    def part(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors under ``prefix`` (e.g. ``"generator."``) with the prefix removed."""
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def require_kind(checkpoint: Checkpoint, kinds: tuple[Kind, ...], wanted: str) -> Checkpoint:
    """``checkpoint`` if it is one of ``kinds``; else an error saying what was ``wanted`` and what it holds."""
    if checkpoint.kind not in kinds:
        raise CheckpointError(f"{checkpoint.path}: not {wanted} but a {checkpoint.kind} file; "
                              f"it holds {KINDS[checkpoint.kind].holds}")
    return checkpoint
