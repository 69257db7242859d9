"""Checkpoint I/O in one place: the authors' files (SDIC, e4e, StyleGAN2, IR-SE50) and our own format.

* :mod:`.kinds`: what a file holds (:class:`Kind`, the parts of each in ``KINDS``), the
  :class:`Checkpoint` a read returns, :class:`CheckpointError`;
* :mod:`.sniffing`: missing/empty/HTML files, the format from the first bytes, weights-only ``torch.load``;
* :mod:`.authors`: the authors' layouts (prefixes, never-used layers, kind detection, the inferred
  configuration), read and written as exact inverses;
* :mod:`.native`: our safetensors format (tensors plus the JSON configuration in the metadata);
* :mod:`.reading`: :func:`read_checkpoint`, the first of ``READERS`` that accepts the file;
* :mod:`.building`: tensor checks, the model or generator of a file, conversion to our format;
* :mod:`.bundled`: the models shipped in the package, by name (``default``).

Key mapping from the authors' prefixes to our module names:
``encoder.`` -> ``encoder.``, ``decoder.`` -> ``generator.``, ``DIP.`` -> ``dipn.``,
``SAF.`` -> ``dicn.``.
"""

from .authors import (
    LAYOUTS,
    PREFIXES,
    UNUSED_PREFIXES,
    Layout,
    detect_kind,
    embedded_config,
    from_layout,
    infer_config,
    infer_generator,
    save_layout,
    to_authors_names,
    to_layout,
    to_our_names,
)
from .building import (
    build_generator,
    build_model,
    check_tensors,
    convert,
    empty_model,
    load_generator,
    load_into,
)
from .kinds import GENERATOR_KINDS, KINDS, MODEL_PARTS, Checkpoint, CheckpointError, Kind, KindInfo, require_kind
from .native import (
    CONFIG_MISMATCH,
    FORMAT_NAME,
    FORMAT_VERSION,
    HALF_MIN_NUMEL,
    read_native,
    save_model,
    save_tensors,
)
from .reading import READERS, Reader, read_authors_checkpoint, read_checkpoint
from .sniffing import file_format, torch_load

_rename = to_our_names  # the name tests/test_checkpoints.py imports

__all__ = [
    "CONFIG_MISMATCH",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "GENERATOR_KINDS",
    "HALF_MIN_NUMEL",
    "KINDS",
    "LAYOUTS",
    "MODEL_PARTS",
    "PREFIXES",
    "READERS",
    "UNUSED_PREFIXES",
    "Checkpoint",
    "CheckpointError",
    "Kind",
    "KindInfo",
    "Layout",
    "Reader",
    "build_generator",
    "build_model",
    "check_tensors",
    "convert",
    "detect_kind",
    "embedded_config",
    "empty_model",
    "file_format",
    "from_layout",
    "infer_config",
    "infer_generator",
    "load_generator",
    "load_into",
    "read_authors_checkpoint",
    "read_checkpoint",
    "read_native",
    "require_kind",
    "save_layout",
    "save_model",
    "save_tensors",
    "to_authors_names",
    "to_layout",
    "to_our_names",
    "torch_load",
]
