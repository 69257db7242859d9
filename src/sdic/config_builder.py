"""Typed configurations from plain data: the one builder of every configuration dataclass.

The model (:mod:`sdic.config`), the training stages (:mod:`sdic.training.config`) and the
attribute classifier (:mod:`sdic.editing.learn.classifier`) are dataclasses. :func:`build`
makes one from a mapping (JSON metadata, a YAML file, ``key=value`` overrides): each value is
checked against its field's type hint and coerced where the source cannot spell the type
(``"1e3"`` for an int, ``"yes"`` for a bool, a list or ``"a,b"`` for a tuple); unknown keys are
refused with a suggestion; every message is one line naming the key path (``run.steps``).
:func:`to_plain` is the inverse: JSON/YAML-safe data that :func:`build` turns back into an
equal object.

Supported hints: ``bool``, ``int``, ``float`` (finite), ``str``, ``Any``, ``Literal[...]``,
enums, unions such as ``X | None`` (options tried in order), ``tuple[X, ...]``,
``tuple[X, Y]``, ``list[X]``, ``dict`` / ``dict[K, V]`` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from .errors import ConfigError

T = TypeVar("T")

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


# ------------------------------------------------------------------ building
def build(cls: type[T], data: Mapping[str, Any], where: str = "", base: T | None = None) -> T:
    """``cls`` from a (partial) mapping, over ``base`` (default: the field defaults).

    A nested dataclass given as a mapping is merged onto the base's (or the default's)
    value of that field, so a partial ``run:`` section keeps the stage's other defaults.
    ``where`` is the key path of ``data`` itself, the prefix of every error message.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in data.items():
        path = join_key(where, key)
        if key not in fields:
            raise ConfigError(f"unknown configuration key {path!r}{_suggestion(where, str(key), list(fields))}")
        nested = _dataclass_option(hints[key])
        if nested is not None and isinstance(value, Mapping):
            start = getattr(base, key) if base is not None else _default(fields[key])
            values[key] = build(nested, value, path, start if isinstance(start, nested) else None)
        else:
            values[key] = coerce(value, hints[key], path)
    if base is None:
        missing = [name for name, f in fields.items() if name not in values and _required(f)]
        if missing:
            raise ConfigError(f"missing configuration key {join_key(where, missing[0])!r}")
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except (TypeError, ValueError) as error:  # the dataclass's own checks (__post_init__)
        raise ConfigError(f"{where or cls.__name__}: {error}") from None


def from_json(cls: type[T], text: str | bytes, where: str = "") -> T:
    """``cls`` from JSON text (e.g. the configuration stored in a file's metadata)."""
    try:
        data = json.loads(text)
    except (TypeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{where or cls.__name__}: not valid JSON ({error})") from None
    return build(cls, data, where)


def to_plain(obj: Any) -> Any:
    """Dataclasses, enums, tuples and paths to plain dicts/lists/scalars (JSON- and YAML-safe)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return to_plain(obj.value)
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_json(obj: Any) -> str:
    """Canonical JSON of :func:`to_plain` (sorted keys): what files store."""
    return json.dumps(to_plain(obj), sort_keys=True)


def join_key(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _suggestion(where: str, key: str, names: list[str]) -> str:
    close = difflib.get_close_matches(key, names, n=1) or [n for n in names if n.startswith(key)][:1]
    if close:
        return f" (did you mean {join_key(where, close[0])!r}?)"
    return f" (known keys{' of ' + repr(where) if where else ''}: {', '.join(names)})"


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _dataclass_option(hint: Any) -> type | None:
    """The dataclass of a ``Config`` or ``Config | None`` hint, else None."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    classes = [o for o in options if dataclasses.is_dataclass(o) and isinstance(o, type)]
    return classes[0] if len(classes) == 1 else None


# ------------------------------------------------------------------ values
def coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` (from JSON, YAML or the command line) as the type ``hint``, or a ConfigError."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return _union(value, typing.get_args(hint), where)
    if origin is Literal:
        return _literal(value, typing.get_args(hint), where)
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return build(hint, value, where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum(value, hint, where)
    if origin is tuple or hint is tuple:
        return _tuple(value, typing.get_args(hint), where)
    if origin is list or hint is list:
        args = typing.get_args(hint)
        return list(_tuple(value, (args[0], ...) if args else (), where))
    if origin is dict or hint is dict:
        return _dict(value, typing.get_args(hint), where)
    scalar = _SCALARS.get(hint)
    if scalar is None:
        raise TypeError(f"{where}: the configuration builder does not handle the type {hint!r}")
    return scalar(value, where)


def _union(value: Any, options: tuple, where: str) -> Any:
    if value is None and type(None) in options:
        return None
    first_error = None
    for option in options:
        if option is type(None):
            continue
        try:
            return coerce(value, option, where)
        except ConfigError as error:
            first_error = first_error or error
    raise first_error or ConfigError(f"{where}: invalid value {value!r}")


def _choices(options: list[str]) -> str:
    return options[0] if len(options) == 1 else f"{', '.join(options[:-1])} or {options[-1]}"


def _literal(value: Any, options: tuple, where: str) -> Any:
    for option in options:
        if type(value) is type(option) and value == option:
            return option
        if isinstance(value, str) and not isinstance(option, str) and value == str(option):
            return option  # a number or bool choice spelled on the command line
    raise ConfigError(f"{where} must be {_choices([str(o) for o in options])}, got {value!r}")


def _enum(value: Any, hint: type[enum.Enum], where: str) -> enum.Enum:
    if isinstance(value, hint):
        return value
    for member in hint:
        if value == member.value or value == member.name:
            return member
    raise ConfigError(f"{where} must be {_choices([str(m.value) for m in hint])}, got {value!r}")


def _tuple(value: Any, args: tuple, where: str) -> tuple:
    if isinstance(value, str):  # "a,b" on the command line
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if not args:
        return tuple(value)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
    if len(args) != len(value):
        raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
    return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))


def _dict(value: Any, args: tuple, where: str) -> dict:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    if not args:
        return dict(value)
    key_type, value_type = args
    return {coerce(k, key_type, where): coerce(v, value_type, join_key(where, k)) for k, v in value.items()}


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).lower() if isinstance(value, (str, int)) else None
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


def _float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return number


def _int(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass  # "1e4" or "2.0"
    try:
        number = _float(value, where)
    except ConfigError:
        raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if not number.is_integer():
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return int(number)


def _str(value: Any, where: str) -> str:
    if value is None:  # an empty YAML value (``path:``)
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return str(value)


_SCALARS = {bool: _bool, int: _int, float: _float, str: _str}
