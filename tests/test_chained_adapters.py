"""Chained LoRA adapters: a stage trained on another stage's adapter merges into a model that holds every delta
below it, and an adapter whose parent moved or changed is refused.

The pipeline fixture (tests/pipeline.py) trains SFT with LoRA on the fully trained PT model, and every alignment stage
with LoRA on the SFT model; a copy of it then trains PT with LoRA, and SFT with QLoRA under DPO.
"""
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from medforge.formats import read_canonical, to_chat
from medforge import params
from medforge.modeling import load_model, load_tokenizer
from medforge.preference import completion_ids, completion_logps
from medforge.provenance import LineageError
from tests.pipeline import ALIGNMENT, DVC, set_params, sh

FP32 = params.load("model", dtype="float32")


def lora_delta(adapter: Path) -> dict[str, torch.Tensor]:
    """What merging an adapter adds to each weight it adapts, alpha / r * B @ A, by the merged weight's name."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    tensors = load_file(adapter / "adapter_model.safetensors")
    return {key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight"):
            config["lora_alpha"] / config["r"] * tensors[key.replace(".lora_A.", ".lora_B.")] @ tensors[key]
            for key in tensors if ".lora_A." in key}


def assert_merge_adds_only_its_delta(repo: Path, stage: str, parent: str, parent_merged: str) -> None:
    """models/merged/<stage> is the parent's merged model plus the stage's LoRA delta, weight by weight."""
    adapter = repo / "models" / stage
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == parent
    delta = lora_delta(adapter)
    merged = load_file(repo / "models/merged" / stage / "model.safetensors")
    below = load_file(repo / parent_merged / "model.safetensors")
    assert merged.keys() == below.keys() and delta and delta.keys() <= merged.keys()
    for name, weight in merged.items():
        if name in delta:
            assert delta[name].abs().max() > 1e-5, f"{stage}: {name} did not train"
            torch.testing.assert_close(weight - below[name], delta[name], rtol=0, atol=1e-6, msg=f"{stage}: {name}")
        else:
            assert torch.equal(weight, below[name]), f"{stage}: {name}"


@pytest.mark.parametrize("stage", ALIGNMENT)
def test_lora_alignment_on_lora_sft_merges_both(repo, stage):
    assert_merge_adds_only_its_delta(repo, stage, "models/sft", "models/merged/sft")


def test_lora_sft_on_full_pt_merges_into_pt(repo):
    assert_merge_adds_only_its_delta(repo, "sft", "models/pt", "models/merged/pt")


def test_the_next_stage_loads_the_model_merge_writes(repo, monkeypatch):
    monkeypatch.chdir(repo)  # lineage paths are the repository's, as params.yaml names them
    loaded = load_model("models/dpo", FP32).state_dict()
    for name, weight in load_file("models/merged/dpo/model.safetensors").items():
        assert torch.equal(loaded[name], weight), name


def answer_nll(model_dir: Path, chats: list[list[dict]]) -> float:
    """Mean negative log-likelihood per token of each conversation's last (assistant) turn."""
    model, tokenizer = load_model(model_dir, FP32), load_tokenizer(model_dir, FP32)
    prompts, answers = [c[:-1] for c in chats], [c[-1]["content"] for c in chats]
    tokens = sum(len(completion_ids(tokenizer, p, a)[1]) for p, a in zip(prompts, answers))
    return -completion_logps(model, tokenizer, prompts, answers).sum().item() / tokens


def test_the_merged_dpo_model_answers_like_the_sft_model_below_it(repo):
    chats = [r["messages"] for r in read_canonical(repo / "data/prepared/sft_validation.jsonl", to_chat)][:32]
    nll = {name: answer_nll(repo / "models/merged" / name, chats) for name in ("pt", "sft", "dpo")}
    assert nll["pt"] - nll["sft"] > 0.1, nll  # SFT changed the answers' likelihood enough to tell the models apart
    assert abs(nll["dpo"] - nll["sft"]) < 0.2 * (nll["pt"] - nll["sft"]), nll  # two DPO steps on top of the SFT


@pytest.fixture(scope="module")
def rechained(repo, tmp_path_factory):
    """A copy of the pipeline's repository, DVC cache included, for other fine-tuning modes."""
    path = tmp_path_factory.mktemp("rechained") / "repo"
    shutil.copytree(repo, path, symlinks=True)
    return path


def test_lora_sft_on_lora_pt_merges_both(rechained):
    set_params(rechained, {"pt": {"finetuning": "lora"}})
    sh(str(DVC), "repro", "merge@pt", "merge@sft", cwd=rechained)
    assert_merge_adds_only_its_delta(rechained, "pt", "models/base", "models/base")
    assert_merge_adds_only_its_delta(rechained, "sft", "models/pt", "models/merged/pt")


def test_lora_dpo_on_qlora_sft_merges_both_and_a_stale_or_lost_parent_stops_it(rechained, monkeypatch):
    set_params(rechained, {"sft": {"finetuning": "qlora"}})
    sh(str(DVC), "repro", "merge@sft", cwd=rechained)
    monkeypatch.chdir(rechained)
    with pytest.raises(LineageError, match="models/dpo: this LoRA adapter was trained on models/sft with weights"):
        load_model("models/dpo", FP32)  # the DPO adapter of the LoRA SFT model, which the QLoRA one replaced
    sh(str(DVC), "repro", "merge-preference@dpo", cwd=rechained)
    assert_merge_adds_only_its_delta(rechained, "dpo", "models/sft", "models/merged/sft")
    os.rename("models/sft", "models/sft-moved")
    with pytest.raises(LineageError, match="trained on models/sft, which no longer exists"):
        load_model("models/dpo", FP32)
