"""End to end: the DVC pipeline on a shrunken tiny configuration in a temporary copy of the repository."""
import json
import time

from tests.pipeline import ALIGNMENT, DVC, PREFERENCE, sh


def test_pipeline_writes_models_metrics_and_report(repo):
    for model in ("base", "pt", "sft", "rm", *ALIGNMENT, *(f"merged/{s}" for s in ("pt", "sft", *ALIGNMENT))):
        assert {"config.json", "adapter_config.json"} & {f.name for f in (repo / "models" / model).iterdir()}, model
    assert (repo / "models/sft/adapter_config.json").exists()
    assert not list((repo / "models/merged").glob("*/adapter_config.json"))
    base = json.loads((repo / "metrics/eval/base.json").read_text())
    sft = json.loads((repo / "metrics/eval/sft.json").read_text())
    for m in (base, sft):
        assert 0 <= m["mcq_acc"] <= 1 and 0 <= m["preference_acc"] <= 1 and m["answer_ppl"] > 1
        # the standard error of a mean of 0/1 scores over 60 questions (40 pairs): 0 < se <= 0.5 / sqrt(n - 1)
        assert 0 < m["mcq_acc_stderr"] <= 0.5 / 59 ** 0.5 and 0 < m["preference_acc_stderr"] <= 0.5 / 39 ** 0.5
    # Even 30 steps of PT + SFT must lower held-out answer perplexity a lot below the random base model's.
    assert sft["answer_ppl"] < base["answer_ppl"] / 2
    report = (repo / "reports/eval.md").read_text()
    assert "| sft |" in report and "| dpo |" in report and "| kto |" not in report  # pipeline.align: dpo
    assert "| gguf-q4_k_m |" in report  # the DPO model as a q4_k_m GGUF, scored by llama.cpp
    gguf = json.loads((repo / "metrics/eval/gguf-q4_k_m.json").read_text())
    dpo = json.loads((repo / "metrics/eval/dpo.json").read_text())
    assert abs(gguf["answer_ppl"] / dpo["answer_ppl"] - 1) < 0.1 and gguf["size_mb"] < dpo["size_mb"] / 2
    quantized = json.loads((repo / "reports/quantization.json").read_text())
    assert list(quantized) == ["dpo", "gguf-f16", "gguf-q8_0", "gguf-q4_k_m", "gptq", "bnb-nf4", "bnb-int8"]
    assert quantized["bnb-nf4"]["memory_mb"] < quantized["dpo"]["memory_mb"] / 2
    assert quantized["gptq"]["size_mb"] < quantized["dpo"]["size_mb"] / 2
    assert (repo / "plots/eval.png").stat().st_size > 1000
    assert (repo / "dvclive/sft/plots/metrics/train/loss.tsv").exists()
    data = json.loads((repo / "metrics/data.json").read_text())
    assert data["sft"]["rejected"] == 0 and data["sft"]["train"] > 0 and data["sft"]["validation"] > 0


def test_noop_repro_is_fast_and_runs_nothing(repo):
    seconds = []
    for _ in range(2):  # the first run may read DVC's and Python's files from disk; the best of two is the figure
        start = time.perf_counter()
        out = sh(str(DVC), "repro", cwd=repo)
        seconds.append(time.perf_counter() - start)
        assert "Running stage" not in out
    assert min(seconds) < 3, seconds


def test_every_alignment_stage_trains_and_is_evaluated(repo):
    rm = json.loads((repo / "metrics/rm.json").read_text())
    assert rm["steps"] == 2 and 0 <= rm["heldout_accuracy"] <= 1 and "heldout_margin" in rm
    assert (repo / "models/rm/config.json").exists() and not (repo / "models/rm/adapter_config.json").exists()
    for stage in ALIGNMENT:
        metrics = json.loads((repo / f"metrics/{stage}.json").read_text())
        assert metrics["steps"] == 2, stage
        evaluated = json.loads((repo / f"metrics/eval/{stage}.json").read_text())
        assert 0 <= evaluated["preference_acc"] <= 1 and evaluated["answer_ppl"] > 1
    for stage in PREFERENCE:
        metrics = json.loads((repo / f"metrics/{stage}.json").read_text())
        assert 0 <= metrics["heldout_reward_accuracy"] <= 1 and metrics["dropped_too_long"] == 0
    for stage in ("ppo", "grpo"):
        metrics = json.loads((repo / f"metrics/{stage}.json").read_text())
        assert {"reward_first_10pct", "reward_last_10pct"} <= set(metrics), stage
        assert (repo / f"dvclive/{stage}/plots/metrics/train/reward.tsv").exists()
    for function in ("correctness", "answer_format", "brevity"):  # each GRPO reward function's own curve
        assert (repo / f"dvclive/grpo/plots/metrics/train/rewards/{function}/mean.tsv").exists(), function
    grpo = json.loads((repo / "metrics/grpo.json").read_text())
    assert 0 <= grpo["heldout_accuracy_before"] <= 1 and 0 <= grpo["heldout_accuracy_after"] <= 1


def test_a_stage_run_again_writes_the_same_model(repo):
    # the reward model's new head is the one weight initialised before its trainer seeds itself
    trained = (repo / "models/rm/model.safetensors").read_bytes()
    sh(str(DVC), "repro", "--force", "--single-item", "rm", cwd=repo)
    assert (repo / "models/rm/model.safetensors").read_bytes() == trained


def test_experiment_with_new_dpo_beta_reruns_only_downstream(repo):
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results", cwd=repo)
    out = sh(str(DVC), "exp", "run", "report", "-S", "preference.dpo.beta=0.2", "-n", "beta-0.2", cwd=repo)
    for stage in ("preference@dpo", "merge-preference@dpo", "eval-preference@dpo", "gguf", "eval@gguf-q4_k_m",
                  "report"):
        assert f"Running stage '{stage}'" in out
    for stage in ("generate", "prepare", "base", "pt", "sft", "eval@base", "eval@sft",
                  *(f"preference@{m}" for m in PREFERENCE if m != "dpo")):
        assert f"Running stage '{stage}'" not in out
    shown = json.loads(sh(str(DVC), "exp", "show", "--json", cwd=repo))
    runs = [r for commit in shown for r in [commit] + [e for x in commit.get("experiments") or [] for e in x["revs"]]]
    names = [r.get("name") for r in runs]
    assert "beta-0.2" in names
    with_metrics = [r for r in runs if (r.get("data") or {}).get("metrics", {}).get("metrics/eval/dpo.json")]
    assert len(with_metrics) >= 2
