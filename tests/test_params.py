from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from medforge.params import ParamsError, build, load
from medforge.train import SFTParams
from tests.conftest import ROOT


@dataclass
class Inner:
    r: int = 8


@dataclass
class Schema:
    name: str
    rate: float = 0.1
    mode: Literal["a", "b"] = "a"
    items: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    optional: str | None = None


def test_valid_values_build_the_dataclass():
    s = build(Schema, {"name": "x", "rate": 1, "mode": "b", "items": ["p"], "inner": {"r": 4}}, "sec")
    assert s == Schema(name="x", rate=1.0, mode="b", items=["p"], inner=Inner(r=4))
    assert isinstance(s.rate, float)


@pytest.mark.parametrize("raw, message", [
    ({"name": "x", "learning_rate": 1}, "sec.learning_rate: unknown key"),
    ({"name": 3}, "sec.name: expected str"),
    ({"name": "x", "rate": "fast"}, "sec.rate: expected float"),
    ({"name": "x", "rate": True}, "sec.rate: expected float"),
    ({"name": "x", "mode": "c"}, "sec.mode: expected one of ['a', 'b']"),
    ({"name": "x", "items": "p"}, "sec.items: expected a list"),
    ({"name": "x", "items": [1]}, "sec.items[0]: expected str"),
    ({"name": "x", "inner": {"rank": 4}}, "sec.inner.rank: unknown key"),
    ({"name": "x", "inner": {"r": 4.5}}, "sec.inner.r: expected int"),
    ({}, "sec.name: missing required key"),
])
def test_bad_values_fail_naming_the_key(raw, message):
    with pytest.raises(ParamsError) as e:
        build(Schema, raw, "sec")
    assert message in str(e.value)


def test_project_params_file_validates_every_section():
    from bench.throughput import Params as BenchParams
    from eval.report import Pipeline
    from eval.run import Params as EvalParams
    from medforge.modeling import ModelParams
    from medforge.preference import PreferenceParams
    from serve.__main__ import Settings as ServeSettings
    from stages import dpo, generate, gguf, gptq, grpo, kto, ppo, prepare, rm
    schemas = {"generate": generate.Params, "data": prepare.Params, "model": ModelParams, "pt": SFTParams,
               "sft": SFTParams, "pipeline": Pipeline, "rm": rm.Params, "ppo": ppo.Params, "dpo": dpo.Params,
               "orpo": PreferenceParams, "kto": kto.Params, "grpo": grpo.Params, "eval": EvalParams,
               "bench": BenchParams, "gguf": gguf.Params, "gptq": gptq.Params, "serve": ServeSettings}
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(raw) == set(schemas)
    for section, schema in schemas.items():
        assert isinstance(load(section, schema, ROOT / "params.yaml"), schema)


def test_typo_in_params_file_is_reported(tmp_path):
    (tmp_path / "params.yaml").write_text("sft:\n  learning_rat: 0.1\n")
    with pytest.raises(ParamsError, match=r"sft\.learning_rat: unknown key"):
        load("sft", SFTParams, tmp_path / "params.yaml")
