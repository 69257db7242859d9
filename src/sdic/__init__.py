"""SDIC: spatial-contextual discrepancy information compensation for GAN inversion.

Quick start::

    import sdic
    model = sdic.load("sdic_ffhq.pt")            # authors' checkpoint or our .safetensors
    inv = model.invert("face.png")                # e4e code, discrepancy, compensated result
    older = model.edit(inv, "age", factor=3)      # the compensation follows the edit
    older.to_pil()[0].save("older.png")
"""

from .api import load
from .checkpoints import CheckpointError
from .config import SDICConfig
from .errors import SDICError
from .model import Inversion, SDICModel

__version__ = "0.1.0"

__all__ = ["CheckpointError", "Inversion", "SDICConfig", "SDICError", "SDICModel", "__version__", "load"]
