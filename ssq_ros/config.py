"""Typed, validated configuration: one dataclass per section, every field declared once.

Each field carries its description, range or choices in `field(metadata=...)` (see `spec`), so the
defaults, the checks, the docs and the ROS parameter descriptors all come from one declaration.
Loading rejects unknown keys, wrong types and out-of-range values with an error naming the key.

A YAML file holds only what differs from the code's defaults. It may name another file to start
from with a top-level `extends: <file>` (a path beside it, as given, or a file of the package's
config/); its keys then override the other file's, mapping by mapping (`merge`).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ssq_ros.paths import config_path

T = TypeVar('T')
EXTENDS = 'extends'


class ConfigError(ValueError):
    """A configuration value or file is wrong; the message names the key and the file."""


def spec(default: Any = dataclasses.MISSING, *, doc: str, low: float | None = None,
         high: float | None = None, choices: tuple | None = None,
         default_factory: Any = dataclasses.MISSING) -> Any:
    """Declare a config field: default, description, inclusive [low, high] range or choices."""
    metadata = {'doc': doc, 'low': low, 'high': high, 'choices': choices}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, turning a missing, unreadable or corrupt file into a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f'{path}: cannot read config file ({exc.strerror or exc})') from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f'{path}: not valid YAML: {exc}') from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f'{path}: expected a mapping at the top level, got '
                          f'{type(data).__name__}')
    return data


def resolve_config_file(name: str | Path, beside: Path | None = None) -> Path:
    """A config file by name: beside `beside` (another config file's folder) if it is there,
    else the path as given if it exists, else the package's config/ file of that name."""
    path = Path(name)
    if beside is not None and not path.is_absolute() and (beside / path).is_file():
        return beside / path
    return path if path.is_file() else config_path(str(name))


def merge(base: Mapping, override: Mapping) -> dict:
    """`base` with `override`'s keys on top; nested mappings merge, anything else replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_layered(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict:
    """A YAML mapping with its `extends:` chain applied (the file's own keys win)."""
    path = Path(path)
    data = load_yaml(path)
    if EXTENDS not in data:
        return data
    name = data.pop(EXTENDS)
    if not isinstance(name, str) or not name:
        raise ConfigError(f'{path}: {EXTENDS}: expected a file name, got {name!r}')
    base = resolve_config_file(name, path.parent)
    if base.resolve() in _seen + (path.resolve(),):
        raise ConfigError(f'{path}: {EXTENDS}: {name} extends itself (a cycle)')
    return merge(load_layered(base, _seen + (path.resolve(),)), data)


def parse(cls: type[T], data: Mapping | None, where: str = '') -> T:
    """Build dataclass `cls` from a mapping, recursively, validating every key and value."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f'{where or cls.__name__}: expected a mapping, got '
                          f'{type(data).__name__}')
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f'{_key(where, unknown[0])}: unknown key (known: '
                          f'{", ".join(sorted(fields))})')
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        values[name] = _convert(hints[name], value, fields[name], _key(where, name))
    try:
        return cls(**values)
    except TypeError as exc:  # a required field without default is missing
        raise ConfigError(f'{where or cls.__name__}: {exc}') from exc


def load(cls: type[T], path: str | Path, section: str | None = None) -> T:
    """Load `cls` from a YAML file (its `extends:` chain applied), optionally from one
    top-level section of it."""
    data = load_layered(path)
    where = str(path)
    if section is not None:
        if section not in data:
            raise ConfigError(f'{path}: missing section {section!r}')
        data, where = data[section], f'{path}:{section}'
    return parse(cls, data, where)


def to_dict(obj: Any) -> Any:
    """Plain YAML/JSON-ready form of a config dataclass (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def describe(cls: type) -> list[tuple[str, str, Any, str]]:
    """(name, type, default, description) for every field, nested sections dotted."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += [(f'{f.name}.{n}', t, d, doc) for n, t, d, doc in describe(tp)]
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        rows.append((f.name, _type_name(tp), default, f.metadata.get('doc', '')))
    return rows


def _key(where: str, name: str) -> str:
    return f'{where}.{name}' if where else name


def _type_name(tp: Any) -> str:
    return getattr(tp, '__name__', str(tp))


def _convert(tp: Any, value: Any, fld: dataclasses.Field | None, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return parse(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], value, fld, key)
        raise ConfigError(f'{key}: unsupported union type {tp}')  # pragma: no cover
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f'{key}: {value!r} is not one of {list(allowed)}')
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f'{key}: expected a list, got {type(value).__name__}')
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f'{key}: expected {len(args)} items, got {len(value)}')
            items = [_convert(a, v, fld, f'{key}[{i}]') for i, (a, v) in
                     enumerate(zip(args, value, strict=True))]
        else:
            item_tp = args[0] if args else Any
            items = [_convert(item_tp, v, fld, f'{key}[{i}]') for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f'{key}: expected a mapping, got {type(value).__name__}')
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f'{key}: expected true/false, got {value!r}')
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f'{key}: expected a number, got {value!r}')
        if tp is int and (not float(value).is_integer()):
            raise ConfigError(f'{key}: expected an integer, got {value!r}')
        value = tp(value)
        if not math.isfinite(value):
            raise ConfigError(f'{key}: must be finite, got {value!r}')
        _check_range(value, fld, key)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f'{key}: expected a string, got {value!r}')
        _check_range(value, fld, key)
        return value
    return value


def _check_range(value: Any, fld: dataclasses.Field | None, key: str) -> None:
    if fld is None:
        return
    low, high, choices = (fld.metadata.get(k) for k in ('low', 'high', 'choices'))
    if choices is not None and value not in choices:
        raise ConfigError(f'{key}: {value!r} is not one of {list(choices)}')
    if low is not None and value < low:
        raise ConfigError(f'{key}: {value!r} is below the minimum {low}')
    if high is not None and value > high:
        raise ConfigError(f'{key}: {value!r} is above the maximum {high}')


def validate(obj: Any, where: str = '') -> None:
    """Re-check ranges of a dataclass built in code (e.g. overridden from the command line)."""
    parse(type(obj), to_dict(obj), where)
