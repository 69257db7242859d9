"""``--factor`` of ``sdic edit``: numbers, ranges and lists, without swallowing the images."""

from __future__ import annotations

import argparse
import math

from ..errors import InputError

FACTOR_HELP = """edit strength(s), one output each (default 1): a number (--factor 2), several
numbers (--factor -2 2), two ends and a count (--factor -3:3:7, or --factor -3 3 --steps 7:
7 steps from -3 to 3) or a comma list (--factor -2,0,2). Images after --factor are images,
not factors."""


def shield_negative_ranges(argv: list[str]) -> list[str]:
    """``argv`` with ranges and lists that start with '-' (``-3:3:7``, ``-2,0,2``) made positional.

    argparse takes any '-' token that is not a plain negative number for an option; no option
    name holds ':' or ',', so a leading space (which ``float`` ignores) is safe.
    """
    return [f" {a}" if a[:1] == "-" and (":" in a or "," in a) and _is_factor_token(a) else a for a in argv]


class FactorTokens(argparse.Action):
    """``--factor`` values: number-like tokens are factors, anything else is an input image.

    (argparse would otherwise take ``face.png`` in ``--factor -1 1 face.png`` as a factor.)
    """

    def __call__(self, parser, namespace, values, option_string=None):
        factors = [v.strip() for v in values if _is_factor_token(v)]
        images = [v for v in values if not _is_factor_token(v)]
        if not factors:
            parser.error(f"argument --factor: expected a number, a range or a list, got {values[0]!r}")
        setattr(namespace, self.dest, factors)
        namespace.more_inputs = [*(getattr(namespace, "more_inputs", None) or []), *images]


def _is_factor_token(token: str) -> bool:
    parts = token.replace(",", ":").split(":")
    try:
        [float(part) for part in parts if part]
    except ValueError:
        return False
    return any(parts)


def parse_factors(tokens: list[str], steps: int | None = None) -> list[float]:
    """Factors from ``--factor`` tokens: numbers, ``start:stop:count`` ranges and comma lists.

    With ``steps``, exactly two numbers are the ends of ``steps`` evenly spaced factors.
    Non-finite factors, and factors that would give the same file name, are refused.
    """
    if steps is not None:
        if len(tokens) != 2 or not all(_is_number(t) for t in tokens):
            raise InputError("--steps needs exactly two --factor values, the ends: --factor -3 3 --steps 7")
        factors = _linspace(float(tokens[0]), float(tokens[1]), steps, "--steps")
    else:
        factors = [f for token in tokens for f in _expand(token)]
    for factor in factors:
        if not math.isfinite(factor):
            raise InputError(f"--factor must be finite, got {factor}")
    labels: dict[str, float] = {}
    for factor in factors:
        if factor_label(factor) in labels:
            raise InputError(f"--factor {labels[factor_label(factor)]:g} and {factor:g} give the same "
                             f"output name ({factor_label(factor)}); give distinct factors")
        labels[factor_label(factor)] = factor
    return factors


def factor_label(factor: float) -> str:
    """The factor as written in output names (``+2``, ``-0.5``)."""
    return f"{factor:+g}"


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _expand(token: str) -> list[float]:
    if ":" in token:
        parts = token.split(":")
        if len(parts) != 3 or not all(_is_number(p) for p in parts) or not float(parts[2]).is_integer():
            raise InputError(f"--factor {token}: a range is START:STOP:COUNT, e.g. --factor -3:3:7")
        return _linspace(float(parts[0]), float(parts[1]), int(float(parts[2])), f"--factor {token}")
    values = [part for part in token.split(",") if part]
    if not values or not all(_is_number(v) for v in values):
        raise InputError(f"--factor {token}: not a number or a comma list of numbers")
    return [float(v) for v in values]


def _linspace(start: float, stop: float, count: int, label: str) -> list[float]:
    if count < 2:
        raise InputError(f"{label}: a range needs at least 2 steps, got {count}")
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise InputError(f"{label}: the ends of a range must be finite")
    return [start + (stop - start) * k / (count - 1) for k in range(count)]
