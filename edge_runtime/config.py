"""Frozen, validated config objects built from YAML mappings.

Every config in the project is a frozen dataclass. `from_mapping` builds one from a plain
mapping and rejects unknown keys (naming them, with a suggestion), wrong types and missing
required fields. Range checks live in each dataclass's `__post_init__`, raising ConfigError.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import enum
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from edge_runtime.errors import ConfigError

T = TypeVar("T")


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from `data`; `where` is the dotted path used in error messages."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(sorted(fields))})"
        raise ConfigError(f"unknown config key '{_join(where, str(key))}'{hint}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], _join(where, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key '{_join(where, name)}'")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None


def to_dict(obj: Any) -> Any:
    """Plain YAML/JSON-ready data for a config object (tuples become lists, paths strings)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    return obj


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of YAML file `path` ({} for an empty file); ConfigError if missing or unparsable."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot parse config file {p}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return data


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (values parsed as YAML scalars/lists) to a nested mapping."""
    out: dict[str, Any] = _deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        set_key(out, key, value, where=f"override '{item}': ")
    return out


def set_key(data: dict[str, Any], key: str, value: Any, where: str = "config key ") -> None:
    """Set dotted `key` ("a.b.c") in the nested mapping `data`, creating missing (or null) sections.

    Args:
        data: the mapping to change in place.
        key: dotted path; surrounding blanks are ignored.
        value: what to put there.
        where: the error message's prefix (which override or flag this came from).

    Raises:
        ConfigError: a part on the way holds a value that is not a section.
    """
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{where}'{part}' is not a section")
        node = child
    node[parts[-1]] = value


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Config `cls` from YAML file `path` (optional) with `key.sub=value` overrides applied on top."""
    data = load_yaml(path) if path else {}
    return from_mapping(cls, apply_overrides(data, overrides))


def save_config(obj: Any, path: str | Path) -> None:
    """Write config object `obj` to `path` as YAML (keys in field order), readable by load_config."""
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False), encoding="utf-8")


def _deepcopy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deepcopy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """`value` checked against (and converted to) type `tp`; ConfigError naming `where` if it does not fit."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp, where)
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"'{where}' must be one of {', '.join(map(repr, typing.get_args(tp)))}, got {value!r}")
    if origin in (tuple, list, collections.abc.Sequence) or tp in (tuple, list):
        return _coerce_sequence(value, tp, where)
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"'{where}' must be a mapping, got {value!r}")
        args = typing.get_args(tp)
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_mapping(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ConfigError(f"'{where}' must be one of {[m.value for m in tp]}, got {value!r}") from None
    scalar = _SCALARS.get(tp)
    return scalar(value, where) if scalar is not None else value


def _coerce_union(value: Any, tp: Any, where: str) -> Any:
    """The first member type of union `tp` that `value` fits (None only where the union allows it)."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, where)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(errors[0] if len(errors) == 1 else f"'{where}': {value!r} matches none of {_type_name(tp)}")


def _coerce_sequence(value: Any, tp: Any, where: str) -> Any:
    """A list or tuple: fixed-length tuples item by item, the others with one item type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"'{where}' must be a list, got {value!r}")
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise ConfigError(f"'{where}' must have {len(args)} items, got {len(value)}")
        items = [_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
    else:
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    return list(items) if origin is list else tuple(items)


def _to_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"'{where}' must be true or false, got {value!r}")


def _to_int(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ConfigError(f"'{where}' must be an integer, got {value!r}")


def _to_float(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"'{where}' must be a number, got {value!r}")


def _to_str(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(f"'{where}' must be a string, got {value!r}")


def _to_path(value: Any, where: str) -> Path:
    if isinstance(value, (str, Path)):
        return Path(value)
    raise ConfigError(f"'{where}' must be a path, got {value!r}")


_SCALARS: dict[Any, Any] = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str, Path: _to_path}
