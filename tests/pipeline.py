"""The DVC pipeline on a shrunken tiny configuration, in a git repository of its own (the `repo` fixture)."""
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from medforge import params

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).with_name("dvc")
PREFERENCE = params.preference_methods(ROOT / "params.yaml")  # DPO, ORPO, KTO, ...: stages preference@<method>
ALIGNMENT = ("ppo", *PREFERENCE, "grpo")
PAIRS = {"max_steps": 2, "batch_size": 4, "logging_steps": 1}
SMALL = {
    "generate": {"mcq_eval_size": 60, "preference_eval_size": 40},
    "model": {"tiny": {"vocab_size": 1024, "num_layers": 2}},
    "pt": {"max_steps": 30, "batch_size": 8, "logging_steps": 5},
    "sft": {"max_steps": 30, "batch_size": 8, "logging_steps": 5, "finetuning": "lora"},  # exercises LoRA -> merge
    "eval": {"samples": 2, "max_new_tokens": 8},
    "rm": PAIRS,
    "preference": dict.fromkeys(PREFERENCE, PAIRS),
    **{stage: {"max_steps": 2, "batch_size": 4, "num_generations": 2, "max_completion_length": 8,
               "heldout_size": 4} for stage in ("ppo", "grpo")},
}


def set_params(repo: Path, override: dict, base: Path | None = None) -> None:
    """`repo`/params.yaml: `base`'s (default: its own) with `override` merged in; every key stays (none has a
    default)."""
    params.write_overridden(repo / "params.yaml", override, (base or repo) / "params.yaml")


def stage_args(stage: str) -> list[str]:
    """The arguments dvc.yaml's command gives `stage`'s module (its files: medforge.paths); a preference method's
    are its group's, for it."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    cmd = shlex.split(stages["preference"]["do"]["cmd"].replace("${key}", stage) if stage in PREFERENCE
                      else stages[stage]["cmd"])
    return cmd[cmd.index(next(t for t in cmd if t.startswith("stages."))) + 1:]


def sh(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(cwd), "PATH": f"{DVC.parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def make_repo(path: Path) -> Path:
    """A git repository of the working tree's files with the SMALL params, the whole pipeline run once."""
    checkout(path)
    set_params(path, SMALL)
    return commit_and_repro(path)


def checkout(path: Path) -> Path:
    """The working tree's files (tracked, and untracked ones git does not ignore) copied to `path`."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, path / name)
    return path


def commit_and_repro(path: Path, *targets: str) -> Path:
    """`path` made a git repository of its files, then `dvc repro` (of `targets`, default every stage)."""
    sh("git", "init", "-q", cwd=path)
    sh("git", "add", "-A", cwd=path)
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tree", cwd=path)
    sh(str(DVC), "repro", *targets, cwd=path)
    return path


def kill_tree(process) -> None:
    """kill -9 a process and every process under it (torchrun starts its workers in sessions of their own)."""
    import psutil
    tree = psutil.Process(process.pid)
    for p in [tree, *tree.children(recursive=True)]:
        p.kill()
    process.wait()
