"""A stage's files are named in one place: its dvc.yaml command line, next to the deps and outs DVC tracks
(`python -m stages.sft --train data/prepared/sft_train.jsonl ... --out models/sft`; tests/test_deps.py checks that
the two agree). Paths a user chooses (a stage's `init`, `heldout`, the data sources) live in params.yaml and reach
dvc.yaml as `${...}`. No stage code holds a path of its own.
"""
from __future__ import annotations

import argparse
from pathlib import Path

TRAINING = ("out", "metrics", "plots")  # what every training stage writes: model or adapter, metrics, dvclive curves


def stage_paths(*names: str, argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None):
    """The stage's `--NAME PATH` options, every one required; a name ending in `*` takes one or more paths.
    `parser`: one holding the stage's other options."""
    parser = parser or argparse.ArgumentParser(description="the stage's files, as dvc.yaml's cmd gives them")
    for name in names:
        many = name.endswith("*")
        parser.add_argument(f"--{name.rstrip('*')}", type=Path, required=True, nargs="+" if many else None)
    return parser.parse_args(argv)
