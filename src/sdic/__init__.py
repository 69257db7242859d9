"""SDIC: spatial-contextual discrepancy information compensation for GAN inversion.

Quick start::

    import sdic
    model = sdic.load("sdic_ffhq.pt")            # authors' checkpoint or our .safetensors
    inv = model.invert("face.png")                # e4e code, discrepancy, compensated result
    older = model.edit(inv, "age", factor=3)      # the compensation follows the edit
    older.to_pil()[0].save("older.png")

    G = sdic.load_generator("ffhq.pkl")           # any StyleGAN2 generator, NVIDIA's pickles too
    img = G.synthesis(G.mapping(z, truncation_psi=0.7))
"""

from .api import load
from .checkpoints import CheckpointError, load_generator
from .config import SDICConfig
from .errors import SDICError
from .model import Inversion, SDICModel

__version__ = "0.1.0"

__all__ = ["CheckpointError", "Inversion", "SDICConfig", "SDICError", "SDICModel", "__version__", "load", "load_generator"]
