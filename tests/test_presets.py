"""A preset of each family (configs/presets) end to end on the CPU: its checkpoint swapped for the fixture of its
family (medforge/fixtures.py), MedicalGPT's datasets for the generated data of the same kinds, sizes shrunk; all else
as the preset says (QLoRA, full fine-tuning, skipped PT, gradient checkpointing). `make all`'s target, `report`, must
run through: prepare, base, [PT], SFT, DPO, merge, GGUF, eval."""
import json
import shutil

import pytest

from medforge import params, presets
from tests.pipeline import ROOT, checkout, commit_and_repro
from tests.test_params import changed_lines

FAMILY = {"Qwen/Qwen2.5-": "qwen2.5", "Qwen/Qwen3-": "qwen3", "meta-llama/Llama-3.1-": "llama3.1"}
TRAINING = {"max_steps": 2, "batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 128, "logging_steps": 1}
SHRUNK = {"generate": {"conditions": 6, "mcq_eval_size": 20, "preference_eval_size": 10, "wrong_answers_per_fact": 1},
          "pt": TRAINING, "sft": TRAINING,
          "preference": {"dpo": {**TRAINING, "precompute_ref_log_probs": False}},  # 2 steps, not all
          "eval": {"samples": 1, "max_new_tokens": 4},
          "gguf": {"types": ["f16", "q4_k_m"]}}


def family_of(checkpoint: str) -> str:
    return next(family for prefix, family in FAMILY.items() if checkpoint.startswith(prefix))


def first_of_each_family() -> list[str]:
    """One preset per family end to end (2-3 minutes each on a CPU). Every preset is applied, validated and planned by
    test_plan, and test_real_families trains LoRA and QLoRA SFT and DPO on each family's fixture."""
    firsts = {}
    for name in presets.names():
        firsts.setdefault(family_of(presets.read(name)["model"]["base"]), name)
    return list(firsts.values())


@pytest.mark.parametrize("name", first_of_each_family())
def test_a_preset_of_each_family_runs_end_to_end_on_its_fixture(name, real_family_dir, tmp_path):
    preset = presets.read(name)
    fixture = real_family_dir(family_of(preset["model"]["base"]))
    local = {kind: [f"data/generated/{kind}.jsonl"] if preset["data"][kind] else [] for kind in preset["data"]
             if kind in ("pretrain", "sft", "preference")}
    repo = checkout(tmp_path)
    presets.apply(name, {**SHRUNK, "model": {"base": str(fixture)}, "data": local}, repo / "params.yaml")
    commit_and_repro(repo, "report")

    table = (repo / "reports/eval.md").read_text()
    for row in ("base", "sft", "dpo", "gguf-q4_k_m"):
        assert f"| {row} |" in table, row
    sft = json.loads((repo / "metrics/sft.json").read_text())
    assert sft["steps"] == 2
    assert sft["provenance"]["precision"].startswith("4-bit NF4") == (preset["sft"]["finetuning"] == "qlora")
    assert (repo / "models/pt").exists() == (preset["sft"]["init"] == "models/pt")
    merged = repo / "models/merged/dpo"
    assert (merged / "chat_template.jinja").read_text() == (fixture / "chat_template.jinja").read_text()
    assert json.loads((merged / "generation_config.json").read_text())["eos_token_id"] == \
        json.loads((fixture / "generation_config.json").read_text())["eos_token_id"]


def test_a_preset_changes_only_its_values_and_a_bad_one_changes_nothing(tmp_path):
    target = shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    before = target.read_text()
    changed = presets.apply("qwen2.5-7b-qlora", path=target)
    # each changed value rewrites its own lines (a list's items), comments kept; nothing else moves
    keys = tuple(f"{change.split(':')[0].rsplit('.', 1)[-1]}:" for change in changed)
    assert len(changed) > 10 and all(line.startswith(("- ", *keys)) for line in changed_lines(before, target.read_text()))
    assert params.load("sft", target).finetuning == "qlora" and params.load("model", target).base.startswith("Qwen/")
    written = target.read_text()
    for bad, message in (({"sft": {"lora": {"rank": 3}}}, "sft.lora.rank: unknown key"),
                         ({"sft": {"epochs": "one"}}, "sft.epochs: expected float")):
        with pytest.raises(SystemExit, match=message):
            presets.apply("qwen2.5-7b-lora", bad, target)
        assert target.read_text() == written
