"""Latent editing, in two halves.

* :mod:`.apply`: directions as objects (InterFaceGAN vectors, GANSpace edits), the bundled
  direction sets, reading a direction file (:func:`load_direction`); :meth:`sdic.SDICModel.edit` applies them.
* :mod:`.learn`: learning directions for a generator from attribute labels (a classifier,
  InterFaceGAN boundaries) and assessing them (docs/directions.md).
"""

from .apply import (
    DIRECTIONS,
    Direction,
    DirectionInfo,
    GANSpaceDirection,
    LinearDirection,
    available,
    check_factor,
    check_finite,
    describe,
    factor_range,
    load_direction,
    load_direction_file,
    looks_like_file,
    named,
    resolve,
)

__all__ = [
    "DIRECTIONS",
    "Direction",
    "DirectionInfo",
    "GANSpaceDirection",
    "LinearDirection",
    "available",
    "check_factor",
    "check_finite",
    "describe",
    "factor_range",
    "load_direction",
    "load_direction_file",
    "looks_like_file",
    "named",
    "resolve",
]
