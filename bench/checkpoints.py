"""`make bench-checkpoints`: what checkpointing costs a training stage, side by side in one command: the stage with
no checkpoints, with params.yaml's `checkpoints` (the default: every 30 minutes), and with one every `--every` steps.

Each runs the real stage (its dvc.yaml command, resumable, keyed by its DVC inputs) in a
scratch copy of the stage (its code, params, dvc.yaml and inputs), so the workspace's outputs stay as they are.
Writes reports/checkpoints_bench.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from medforge import params
from medforge.io import write_json
from medforge.provenance import device, stage_inputs


def run(repo: Path, cmd: list[str], checkpoints: dict) -> dict:
    """The stage's command `cmd` in `repo` with params.yaml's `checkpoints` section changed to `checkpoints`."""
    params.write_overridden(repo / "params.yaml", {"checkpoints": checkpoints}, repo / "params.yaml")
    start = time.perf_counter()
    subprocess.run([sys.executable, *cmd[1:]], cwd=repo, check=True, env={**os.environ, "PYTHONPATH": str(repo)},
                   stdout=subprocess.DEVNULL)
    metrics = json.loads((repo / cmd[cmd.index("--metrics") + 1]).read_text())
    return {"wall_seconds": round(time.perf_counter() - start, 1), "train_seconds": metrics["seconds"],
            "steps": metrics["steps"], "eval_loss": metrics.get("eval_loss")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="sft")
    parser.add_argument("--every", type=int, default=50, help="steps between checkpoints in the third run")
    args = parser.parse_args()
    stage = stage_inputs(args.stage)
    cmd, inputs = shlex.split(stage["cmd"]), [d for d in stage["deps"] if d != "params.yaml"]
    with tempfile.TemporaryDirectory() as scratch:
        repo = Path(scratch)
        for name in ["params.yaml", "dvc.yaml", *inputs]:
            copy = shutil.copytree if Path(name).is_dir() else shutil.copy2
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            copy(name, repo / name)
        subprocess.run([Path(sys.executable).with_name("dvc"), "init", "--no-scm", "-q"], cwd=repo, check=True)
        results = {"none": run(repo, cmd, {"every_steps": 0, "every_minutes": 0}),
                   "default": run(repo, cmd, dataclasses.asdict(params.load("checkpoints"))),
                   f"every_{args.every}_steps": run(repo, cmd, {"every_steps": args.every, "every_minutes": 0})}
    base = results["none"]["wall_seconds"]
    report = {"date": date.today().isoformat(), "machine": device(), "stage": args.stage, **results,
              "wall_time_ratio_vs_none": {k: round(v["wall_seconds"] / base, 3) for k, v in results.items()}}
    write_json("reports/checkpoints_bench.json", report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
