"""params.yaml loading with validation: unknown keys and wrong types fail loudly, naming the key."""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml

PARAMS_FILE = Path("params.yaml")


class ParamsError(ValueError):
    pass


def _check(value, hint, key: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ParamsError(f"{key}: expected a mapping, got {value!r}")
        return build(hint, value, key)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _check(value, arg, key)
            except ParamsError:
                pass
        raise ParamsError(f"{key}: expected {hint}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ParamsError(f"{key}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"{key}: expected a list, got {value!r}")
        return [_check(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{key}: expected a mapping, got {value!r}")
        return {k: _check(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if hint is type(None):
        if value is not None:
            raise ParamsError(f"{key}: expected null, got {value!r}")
        return None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool) or not isinstance(value, hint):
        raise ParamsError(f"{key}: expected {hint.__name__}, got {value!r}")
    return value


def build(schema: type, raw: dict, prefix: str):
    """Build dataclass `schema` from `raw`, validating every key recursively."""
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamsError(f"{prefix}.{unknown[0]}: unknown key (known: {', '.join(fields)})")
    values = {}
    for name, field in fields.items():
        key = f"{prefix}.{name}"
        if name in raw:
            values[name] = _check(raw[name], hints[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ParamsError(f"{key}: missing required key")
    return schema(**values)


def load_raw(path: Path = PARAMS_FILE) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def load(section: str, schema: type, path: Path = PARAMS_FILE):
    """Return params.yaml's `section` as a validated `schema` instance."""
    raw = load_raw(path)
    if section not in raw:
        raise ParamsError(f"{path}: missing section '{section}'")
    return build(schema, raw[section] or {}, section)
