"""Frozen dataclasses <-> JSON-ready dicts, with type checking and dotted-key errors.

The machinery under :mod:`geonorm_jax.train.config`, independent of what the sections hold:

* :func:`to_dict`: nested dataclasses to nested dicts (tuples become lists);
* :func:`from_dict`: a dict back to dataclass ``cls``, each value checked against the field's
  annotation (``int``, ``float``, ``bool``, ``str``, ``Literal``, ``tuple[...]``,
  ``list[...]``, ``dict``, unions with ``None``, nested dataclasses); an unknown key or a bad
  value raises ``ValueError`` naming its dotted key (``"model.num_layers"``);
* :func:`merge`: a partial nested dict of overrides applied to a config;
* :func:`diff`: the dotted keys whose values differ;
* older key names: ``old_keys = {section class: {old key: key}}`` renames keys before the
  checks (:func:`rename_old_keys`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["to_dict", "from_dict", "merge", "diff", "rename_old_keys"]

OldKeys = Mapping[type, Mapping[str, str]]


def to_dict(config: Any) -> dict:
    """A JSON-ready nested dict (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def rename_old_keys(cls: type, data: Any, path: str = "", old_keys: OldKeys | None = None):
    """``data`` with the old keys of ``cls`` (and of its dataclass sections) renamed.

    Raises:
      ValueError: an old key and its new name both given.
    """
    if not old_keys or not isinstance(data, dict) or not dataclasses.is_dataclass(cls):
        return data
    out = dict(data)
    dotted = lambda key: f"{path}.{key}" if path else key
    for old, new in old_keys.get(cls, {}).items():
        if old in out:
            if new in out:
                raise ValueError(
                    f"{dotted(old)} and {dotted(new)}: expected one of them ({old!r} is the "
                    f"older name of {new!r}); received both"
                )
            out[new] = out.pop(old)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in out and dataclasses.is_dataclass(hints[f.name]):
            out[f.name] = rename_old_keys(hints[f.name], out[f.name], dotted(f.name), old_keys)
    return out


def from_dict(cls: type, data: dict, path: str = "", *, old_keys: OldKeys | None = None) -> Any:
    """Build dataclass ``cls`` from ``data``, checking keys and value types.

    Raises:
      ValueError: naming the dotted key of an unknown key or a value of the wrong type.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{path or 'config'}: expected an object, got {type(data).__name__}")
    data = rename_old_keys(cls, data, path, old_keys)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            where = f"{path}.{key}" if path else key
            raise ValueError(
                f"unknown config key {where!r}; expected one of: {', '.join(fields)}"
            )
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        kwargs[key] = _coerce(value, hints[key], where, old_keys)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path or 'config'}: {e}") from None


def merge(
    config: Any,
    overrides: dict,
    path: str = "",
    *,
    old_keys: OldKeys | None = None,
    opaque: tuple[str, ...] = (),
) -> Any:
    """``config`` with the (nested, partial) ``overrides`` dict applied, type-checked.

    Nested dicts merge key by key, except the fields named in ``opaque`` (free-form dicts,
    replaced whole).
    """
    if not isinstance(overrides, dict):
        raise ValueError(f"{path or 'config'}: expected an object of config keys, got "
                         f"{type(overrides).__name__} {overrides!r:.60}")
    base = to_dict(config)
    overrides = rename_old_keys(type(config), overrides, path, old_keys)

    def deep(a: dict, b: dict) -> dict:
        out = dict(a)
        for k, v in b.items():
            if isinstance(v, dict) and isinstance(a.get(k), dict) and k not in opaque:
                out[k] = deep(a[k], v)
            else:
                out[k] = v
        return out

    return from_dict(type(config), deep(base, overrides), path, old_keys=old_keys)


def _describe(tp: Any) -> str:
    """What a value of annotation ``tp`` may be, for error messages."""
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if tp is bool:
        return "true/false"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str, old_keys: OldKeys | None = None) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, old_keys=old_keys)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where, old_keys)
            except ValueError as e:
                errors.append(str(e))
        if len(errors) == 1:
            raise ValueError(errors[0])
        expected = " or ".join(_describe(a) for a in args if a is not type(None))
        raise ValueError(f"{where}: expected {expected}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{where}[{i}]", old_keys) for i, v in enumerate(value))
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return [_coerce(v, item, f"{where}[{i}]", old_keys) for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {value!r}")
        return dict(value)
    return value


def diff(a: Any, b: Any) -> list[str]:
    """Dotted keys whose values differ, as ``"model.num_layers: 4 != 2"``."""
    out: list[str] = []

    def walk(x: Any, y: Any, prefix: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y)):
                walk(x.get(k), y.get(k), f"{prefix}.{k}" if prefix else k)
        elif x != y:
            out.append(f"{prefix}: {x!r} != {y!r}")

    walk(to_dict(a), to_dict(b), "")
    return out
