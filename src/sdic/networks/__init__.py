"""The networks of SDIC, named as in the paper: generator, e4e encoder, DIPN, DICN."""

from .arcface import ArcFaceIRSE50
from .dicn import DICN, Affine1d
from .dipn import DIPN
from .encoder import Encoder4Editing
from .generator import Generator

__all__ = ["ArcFaceIRSE50", "DICN", "Affine1d", "DIPN", "Encoder4Editing", "Generator"]
