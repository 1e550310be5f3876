"""End to end: the DVC pipeline on a shrunken tiny configuration in a temporary copy of the repository."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).with_name("dvc")
SMALL = {
    "generate": {"mcq_eval_size": 60, "preference_eval_size": 40},
    "model": {"tiny": {"vocab_size": 1024, "num_layers": 2}},
    "pt": {"max_steps": 30, "batch_size": 8, "logging_steps": 5},
    "sft": {"max_steps": 30, "batch_size": 8, "logging_steps": 5, "finetuning": "lora"},  # exercises LoRA -> merge
    "eval": {"samples": 2, "max_new_tokens": 8},
}


def merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        base[key] = merge(base[key], value) if isinstance(value, dict) else value
    return base


def sh(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(cwd), "PATH": f"{DVC.parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A git clone of the working tree's tracked files with the SMALL params, pipeline already run once."""
    path = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, path / name)
    params = merge(yaml.safe_load((path / "params.yaml").read_text()), SMALL)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    sh("git", "init", "-q", cwd=path)
    sh("git", "add", "-A", cwd=path)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tree", cwd=path)
    sh(str(DVC), "repro", cwd=path)
    return path


def test_pipeline_writes_models_metrics_and_report(repo):
    for model in ("base", "pt", "sft", "merged"):
        assert (repo / "models" / model).is_dir()
    assert (repo / "models/sft/adapter_config.json").exists()
    assert not (repo / "models/merged/adapter_config.json").exists()
    base = json.loads((repo / "metrics/eval/base.json").read_text())
    sft = json.loads((repo / "metrics/eval/sft.json").read_text())
    for m in (base, sft):
        assert 0 <= m["mcq_acc"] <= 1 and 0 <= m["preference_acc"] <= 1 and m["answer_ppl"] > 1
    # Even 30 steps of PT + SFT must lower held-out answer perplexity a lot below the random base model's.
    assert sft["answer_ppl"] < base["answer_ppl"] / 2
    assert "| sft |" in (repo / "reports/eval.md").read_text()
    assert (repo / "plots/eval.png").stat().st_size > 1000
    assert (repo / "dvclive/sft/plots/metrics/train/loss.tsv").exists()
    data = json.loads((repo / "metrics/data.json").read_text())
    assert data["sft"]["rejected"] == 0 and data["sft"]["train"] > 0 and data["sft"]["validation"] > 0


def test_noop_repro_is_fast_and_runs_nothing(repo):
    start = time.perf_counter()
    out = sh(str(DVC), "repro", cwd=repo)
    assert time.perf_counter() - start < 3
    assert "Running stage" not in out


def test_experiment_with_new_sft_learning_rate_reruns_only_downstream(repo):
    sh("git", "add", "-A", cwd=repo)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results", cwd=repo)
    out = sh(str(DVC), "exp", "run", "-S", "sft.learning_rate=0.0005", "-n", "lr-5e-4", cwd=repo)
    for stage in ("sft", "merge", "eval@sft", "report"):
        assert f"Running stage '{stage}'" in out
    for stage in ("generate", "prepare", "base", "pt", "eval@base"):
        assert f"Running stage '{stage}'" not in out
    shown = json.loads(sh(str(DVC), "exp", "show", "--json", cwd=repo))
    runs = [r for commit in shown for r in [commit] + [e for x in commit.get("experiments") or [] for e in x["revs"]]]
    names = [r.get("name") for r in runs]
    assert "lr-5e-4" in names
    with_metrics = [r for r in runs if (r.get("data") or {}).get("metrics", {}).get("metrics/eval/sft.json")]
    assert len(with_metrics) >= 2
