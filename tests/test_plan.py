"""`make plan` (medforge/plan.py): its parameter counts against real models, its verdict on the presets' own claims,
and the knob it names when a stage does not fit."""
import shutil
import subprocess

import pytest

from medforge import plan, presets
from medforge.fixtures import FAMILIES
from tests.conftest import ROOT

# The parameter counts the checkpoints' model cards publish.
PUBLISHED_COUNTS = {"Qwen/Qwen2.5-7B-Instruct": 7.61e9, "Qwen/Qwen2.5-1.5B-Instruct": 1.54e9,
                    "Qwen/Qwen3-8B": 8.19e9, "meta-llama/Llama-3.1-8B-Instruct": 8.03e9}
# The GPU each preset's comment promises it fits, with its launch settings.
PROMISED = {"qwen2.5-7b-qlora": (24, "single", 1), "qwen3-8b-qlora": (24, "single", 1),
            "qwen2.5-7b-lora": (80, "single", 1), "llama3.1-8b-zero3": (80, "zero3", 8),
            "qwen2.5-1.5b-full": (24, "single", 1)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_counts_equal_the_models_own(family, real_family_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM
    path = real_family_dir(family)
    shape = plan.Shape.of(AutoConfig.from_pretrained(path))
    model = AutoModelForCausalLM.from_pretrained(path)
    assert shape.params() == sum(p.numel() for p in model.parameters())
    lora = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear"))
    assert shape.lora_params(8, "all-linear") == sum(p.numel() for p in lora.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", sorted(PUBLISHED_COUNTS))
def test_published_shapes_give_the_published_counts(name):
    assert plan.PUBLISHED[name].params() == pytest.approx(PUBLISHED_COUNTS[name], rel=5e-3)


def test_every_preset_fits_the_gpu_it_names(tmp_path):
    assert set(PROMISED) == set(presets.names())
    for name, (gib, dist, nproc) in PROMISED.items():
        path = shutil.copy(ROOT / "params.yaml", tmp_path / f"{name}.yaml")
        presets.apply(name, path=path)
        rows = plan.plan(path, gib * plan.GiB, 989, dist, nproc)
        assert [verdict for *_, verdict in rows] == ["yes"] * len(rows), name


def test_what_does_not_fit_names_the_knob_that_makes_it_fit(tmp_path):
    path = shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    presets.apply("qwen2.5-7b-lora", path=path)
    (sft, p, e, verdict), *_ = plan.plan(path, 16 * plan.GiB, 989, "single", 1)
    assert verdict == "NO: set sft.finetuning: qlora" and e.total > 16 * plan.GiB  # bf16 weights alone: 14 GiB
    (sft, p, e, verdict), *_ = plan.plan(path, 24 * plan.GiB, 989, "single", 1)
    assert verdict == "NO: set sft.batch_size: 2 and gradient_accumulation_steps: 16 (the same effective batch)"
    shape = plan.PUBLISHED["Qwen/Qwen2.5-7B-Instruct"]
    assert plan.estimate("sft", p, shape, 2, "single", 1, 989).total <= 24 * plan.GiB \
        < plan.estimate("sft", p, shape, 4, "single", 1, 989).total


def test_make_plan_prints_every_training_stage():
    out = subprocess.run(["make", "-s", "plan", "GPU_GB=24"], cwd=ROOT, capture_output=True, text=True, check=True)
    stages = [line.split()[0] for line in out.stdout.splitlines()[2:]]
    assert stages == ["pt", "sft", "dpo"] and "24 GiB" in out.stdout
