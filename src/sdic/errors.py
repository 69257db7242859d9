"""The package's exception base: every error a user can fix derives from :class:`SDICError`.

The command line turns an ``SDICError`` into a one-line message and exit code 2; anything else
is a bug and keeps its traceback. Subclasses also derive from the built-in exception a caller
would expect (``ValueError``, ``FileNotFoundError``, ...), so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class SDICError(Exception):
    """An error caused by the input, the environment or the request, not by a bug in sdic."""


class InputError(SDICError, ValueError):
    """An argument or input value is invalid (non-finite numbers, wrong shapes, bad names)."""


class InputTypeError(InputError, TypeError):
    """An argument has a type sdic cannot use (``except TypeError`` callers keep working)."""


class MissingFileError(SDICError, FileNotFoundError):
    """A file or folder named by the user does not exist (or holds none of the files asked for)."""


class MissingDependencyError(SDICError, ImportError):
    """An optional package is not installed; the message names the extra to install."""


class OutputError(SDICError, OSError):
    """An output could not be written (not a folder, not writable, disk full)."""


class ConfigError(SDICError, ValueError):
    """A configuration key or value is invalid (YAML files, overrides, stored configurations)."""
