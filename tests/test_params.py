"""params.yaml is the one source of every setting: each section has a schema without defaults, a missing, unknown
or mistyped key fails naming it, and no code reads a setting any other way."""
import ast
import dataclasses
import difflib
import typing
from dataclasses import dataclass
from typing import Literal

import pytest
import yaml

from medforge import params
from medforge.params import ParamsError, build, load
from tests.conftest import ROOT

PARAMS = ROOT / "params.yaml"
CODE = [p for d in ("medforge", "stages", "eval", "serve", "bench") for p in sorted((ROOT / d).rglob("*.py"))]


@dataclass
class Inner:
    r: int


@dataclass
class Schema:
    name: str
    rate: float
    mode: Literal["a", "b"]
    items: list[str]
    inner: Inner
    optional: str | None


GOOD = {"name": "x", "rate": 1, "mode": "b", "items": ["p"], "inner": {"r": 4}, "optional": None}


def test_valid_values_build_the_dataclass():
    s = build(Schema, GOOD, "sec")
    assert s == Schema(name="x", rate=1.0, mode="b", items=["p"], inner=Inner(r=4), optional=None)
    assert isinstance(s.rate, float)


@pytest.mark.parametrize("change, message", [
    ({"learning_rate": 1}, "sec.learning_rate: unknown key"),
    ({"name": 3}, "sec.name: expected str"),
    ({"rate": "fast"}, "sec.rate: expected float"),
    ({"rate": True}, "sec.rate: expected float"),
    ({"mode": "c"}, "sec.mode: expected one of ['a', 'b']"),
    ({"items": "p"}, "sec.items: expected a list"),
    ({"items": [1]}, "sec.items[0]: expected str"),
    ({"inner": {"r": 4, "rank": 4}}, "sec.inner.rank: unknown key"),
    ({"inner": {"r": 4.5}}, "sec.inner.r: expected int"),
    ({"inner": {}}, "sec.inner.r: missing key"),
    ({"optional": 1}, "sec.optional: expected"),
])
def test_bad_values_fail_naming_the_key(change, message):
    with pytest.raises(ParamsError) as e:
        build(Schema, {**GOOD, **change}, "sec")
    assert message in str(e.value)


def schemas_within(schema: type) -> list[type]:
    """`schema` and every dataclass its fields hold (nested, in unions, lists and dicts)."""
    found, todo = [], [schema]
    while todo:
        hint = todo.pop()
        if dataclasses.is_dataclass(hint):
            found.append(hint)
            todo += typing.get_type_hints(hint).values()
        todo += typing.get_args(hint)
    return found


def test_every_section_has_a_schema_and_loads():
    raw = yaml.safe_load(PARAMS.read_text())
    assert set(raw) == {*params.SCHEMAS, params.PREFERENCE}
    assert params.preference_methods(PARAMS) == list(raw[params.PREFERENCE]) and len(raw[params.PREFERENCE]) >= 3
    for section in params.sections(PARAMS):
        assert isinstance(load(section, PARAMS), params.schema_of(section))


def test_a_preference_method_is_its_stage_module_and_its_section():
    assert params.schema_path("dpo", PARAMS) == "stages.dpo:Params" and params.key_of("dpo", PARAMS) == "preference.dpo"
    assert params.key_of("sft", PARAMS) == "sft"
    bad = yaml.safe_load(PARAMS.read_text())
    del bad["preference"]["kto"]["beta"]
    with pytest.raises(ParamsError, match=r"^preference\.kto\.beta: missing key"):
        build(params.schema_of("kto", PARAMS), bad["preference"]["kto"], params.key_of("kto", PARAMS))
    with pytest.raises(ParamsError, match="no section 'ipo'"):
        params.schema_path("ipo", PARAMS)


def test_pipeline_align_names_an_alignment_stage(tmp_path):
    target = tmp_path / "params.yaml"
    params.write_overridden(target, {"pipeline": {"align": "kto"}}, PARAMS)
    assert load("pipeline", target).align == "kto"
    params.write_overridden(target, {"pipeline": {"align": "rm"}}, PARAMS)
    with pytest.raises(ParamsError, match=r"pipeline.align: expected one of \['ppo', 'grpo', 'dpo'"):
        load("pipeline", target)


def test_no_schema_holds_a_default():
    """A default in code would be a second value for a key params.yaml already sets."""
    with_defaults = [f"{schema.__module__}.{schema.__name__}.{f.name}"
                     for section in params.sections(PARAMS)
                     for schema in schemas_within(params.schema_of(section, PARAMS))
                     for f in dataclasses.fields(schema)
                     if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
    assert with_defaults == []


def keys(raw: dict, schema: type, prefix: str) -> list[tuple[str, ...]]:
    """Every key path of `raw` the schema defines, nested sections included."""
    hints, found = typing.get_type_hints(schema), []
    for name, value in raw.items():
        found.append((*prefix, name))
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            found += keys(value, hints[name], (*prefix, name))
    return found


def section_of(raw: dict, key: str) -> dict:
    for part in key.split("."):
        raw = raw[part]
    return raw


def test_every_key_missing_from_params_yaml_is_an_error_naming_it():
    raw = yaml.safe_load(PARAMS.read_text())
    checked = 0
    for section in params.sections(PARAMS):
        key = params.key_of(section, PARAMS)
        for path in keys(section_of(raw, key), params.schema_of(section, PARAMS), ()):
            copy = section_of(yaml.safe_load(PARAMS.read_text()), key)
            parent = copy
            for name in path[:-1]:
                parent = parent[name]
            del parent[path[-1]]
            with pytest.raises(ParamsError, match=rf"^{key}\.{'.'.join(path)}: missing key"):
                build(params.schema_of(section, PARAMS), copy, key)
            checked += 1
    assert checked > 250  # every key of every section, nested ones included


def test_settings_are_read_only_through_params_load():
    """No code reads params.yaml around the schemas (load_raw plus .get(key, default) would be a second default),
    and no dataclass in the code outside the schemas carries what looks like a setting's default."""
    readers = [str(p.relative_to(ROOT)) for p in CODE
               if any("load_raw(" in line or "safe_load(" in line and "params.yaml" in line
                      for line in p.read_text().splitlines())]
    # the model card prints sections verbatim; scratch copies are edited through params.write_overridden
    assert sorted(readers) == ["medforge/modelcard.py", "medforge/params.py"]
    schemas = {(s.__module__, s.__name__) for section in params.sections(PARAMS)
               for s in schemas_within(params.schema_of(section, PARAMS))}
    for path in CODE:
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any("dataclass" in ast.unparse(d) for d in node.decorator_list):
                if (module, node.name) in schemas:
                    continue
                defaults = [ast.unparse(s.target) for s in node.body if isinstance(s, ast.AnnAssign) and s.value]
                assert not defaults, f"{module}.{node.name} holds defaults {defaults}: make it a params.yaml section"


def test_typo_in_params_file_is_reported(tmp_path):
    (tmp_path / "params.yaml").write_text("sft:\n  learning_rat: 0.1\n")
    with pytest.raises(ParamsError, match=r"sft\.learning_rat: unknown key"):
        load("sft", tmp_path / "params.yaml")


def test_missing_params_file_is_reported(tmp_path):
    with pytest.raises(ParamsError, match="params.yaml: not found"):
        load("sft", tmp_path / "params.yaml")


def changed_lines(before: str, after: str) -> list[str]:
    """The lines removed from `before` and added in `after`, each stripped of its indent, a smallest diff."""
    a, b = before.splitlines(), after.splitlines()
    return [line.strip() for tag, i, j, k, m in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
            if tag != "equal" for line in a[i:j] + b[k:m]]


def test_an_experiment_changes_only_its_values(tmp_path):
    """`dvc exp run -S` writes params.yaml back in its own style (dvc.utils.hydra.apply_overrides: block lists, empty
    for null, folded text rewrapped); params.yaml is kept in that style, so an experiment's diff is its values."""
    from dvc.utils.hydra import apply_overrides
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS.read_text(encoding="utf-8"), encoding="utf-8")
    apply_overrides(str(path), ["preference.dpo.beta=0.123", "gguf.types=[f16]", "data.sft=[a.jsonl]"])
    diff = changed_lines(PARAMS.read_text(encoding="utf-8"), path.read_text(encoding="utf-8"))
    assert [line.split("#")[0].strip() for line in diff] == [
        "- data/generated/sft.jsonl", "- a.jsonl", "beta: 0.05", "beta: 0.123", "gguf: {types: [f16, q8_0, q4_k_m]}",
        "gguf: {types: [f16]}"]
