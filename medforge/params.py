"""params.yaml, the one home of every setting: each section is validated against its schema, a dataclass without
defaults, so a missing key, an unknown key and a wrong type each fail naming the key."""
from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from pathlib import Path

import yaml

PARAMS_FILE = Path("params.yaml")

# params.yaml's sections and the schema of each ("module:class").
SCHEMAS = {
    "generate": "stages.generate:Params",
    "data": "stages.prepare:Params",
    "model": "medforge.modeling:ModelParams",
    "pt": "medforge.train:SFTParams",
    "sft": "medforge.train:SFTParams",
    "checkpoints": "medforge.checkpoints:CheckpointParams",
    "pipeline": "eval.report:Pipeline",
    "rm": "stages.rm:Params",
    "ppo": "stages.ppo:Params",
    "grpo": "stages.grpo:Params",
    "gguf": "stages.gguf:Params",
    "gptq": "stages.gptq:Params",
    "eval": "eval.run:Params",
    "serve": "serve.__main__:Settings",
    "bench": "bench.throughput:Params",
    "bench_data": "bench.data:Params",
}

# The section holding the alignment methods trained on the preference pairs, one section each: method `dpo` is
# stage preference@dpo, runs stages/dpo.py, and that module's `Params` is the schema of `preference.dpo`.
PREFERENCE = "preference"


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
    names = [f.name for f in dataclasses.fields(schema)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ParamsError(f"{prefix}.{unknown[0]}: unknown key (known: {', '.join(names)})")
    missing = [name for name in names if name not in raw]
    if missing:
        raise ParamsError(f"{prefix}.{missing[0]}: missing key (params.yaml holds every setting; there is no default)")
    return schema(**{name: _check(raw[name], hints[name], f"{prefix}.{name}") for name in names})


def schema_path(section: str, path: Path = PARAMS_FILE) -> str:
    """`module:Class` of `section`'s schema: a top-level section's, or a preference method's stage's Params."""
    return _schema_path(section, preference_methods(path))


def _schema_path(section: str, methods: list[str]) -> str:
    if section in SCHEMAS:
        return SCHEMAS[section]
    if section in methods:
        return f"stages.{section}:Params"
    raise ParamsError(f"params.yaml has no section '{section}' (known: {', '.join(SCHEMAS)}, "
                      f"and the methods under {PREFERENCE}: {', '.join(methods)})")


def schema_of(section: str, path: Path = PARAMS_FILE) -> type:
    return _import(schema_path(section, path))


def _import(schema: str) -> type:
    module, name = schema.split(":")
    return getattr(importlib.import_module(module), name)


def preference_methods(path: Path = PARAMS_FILE) -> list[str]:
    """The alignment methods trained on the preference pairs, in params.yaml's order."""
    return list(load_raw(path).get(PREFERENCE) or {})


def sections(path: Path = PARAMS_FILE) -> list[str]:
    """Every section's name: the top-level ones, then each preference method."""
    return [*SCHEMAS, *preference_methods(path)]


def key_of(section: str, path: Path = PARAMS_FILE) -> str:
    """Where `section` lives in params.yaml: `dpo` under `preference`, `sft` at the top."""
    return f"{PREFERENCE}.{section}" if section in preference_methods(path) else section


def load_raw(path: Path = PARAMS_FILE) -> dict:
    if not Path(path).exists():
        raise ParamsError(f"{path}: not found (run from the repository root, where params.yaml lives)")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def write_overridden(target: Path, override: dict, source: Path = PARAMS_FILE) -> list[str]:
    """`target`: `source` with `override`'s values put in (scratch copies in tests and benchmarks, presets), its
    comments and layout kept, so the diff shows only the values that changed; returns them (`key: old -> new`).
    Every key exists in `source` (none has a default): one it lacks is an error naming it."""
    import io

    from ruamel.yaml import YAML
    writer = YAML()  # as DVC writes params.yaml back (`dvc exp run -S`), so that either leaves the rest as it was
    writer.default_flow_style = False
    writer.representer.add_representer(float, _float)
    data = writer.load(Path(source).read_text(encoding="utf-8"))
    changed = _put(data, override, "")
    text = io.StringIO()
    writer.dump(data, text)
    Path(target).write_text(text.getvalue(), encoding="utf-8")
    return changed


def _float(representer, value: float):
    """1e-05 as 1.0e-05: the YAML 1.1 that PyYAML (load_raw) reads takes an exponent without a dot for a string."""
    text = repr(value)
    return representer.represent_scalar("tag:yaml.org,2002:float",
                                        text.replace("e", ".0e") if "e" in text and "." not in text else text)


def _put(node, override: dict, prefix: str) -> list[str]:
    from ruamel.yaml.comments import CommentedMap, CommentedSeq
    changed = []
    for key, value in override.items():
        if key not in node:
            raise ParamsError(f"{prefix}{key}: unknown key")
        old = node[key]
        if isinstance(value, dict) and isinstance(old, dict):
            changed += _put(old, value, f"{prefix}{key}.")
            continue
        if old != value:
            changed.append(f"{prefix}{key}: {old!r} -> {value!r}")
        if isinstance(value, (list, dict)) and hasattr(old, "fa") and old.fa.flow_style():  # as it was written
            value = CommentedSeq(value) if isinstance(value, list) else CommentedMap(value)
            value.fa.set_flow_style()
        node[key] = value
    return changed


def load(section: str, path: Path = PARAMS_FILE, **overrides):
    """params.yaml's `section` as its validated schema, with `overrides` (field: value) replacing fields. A schema
    with a `validate(path)` method checks its values against the rest of params.yaml."""
    raw = load_raw(path)  # read once: the section and the list of preference methods both come from it
    methods = raw.get(PREFERENCE) or {}
    key, values = (f"{PREFERENCE}.{section}", methods[section]) if section in methods else (section, raw.get(section))
    if section not in methods and section not in raw:
        raise ParamsError(f"{path}: missing section '{key}'")
    schema = _import(_schema_path(section, list(methods)))
    loaded = dataclasses.replace(build(schema, values or {}, key), **overrides)
    if hasattr(loaded, "validate"):
        loaded.validate(path)
    return loaded
