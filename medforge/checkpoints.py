"""Checkpoints and automatic resume for every training stage (params.yaml `checkpoints`).

A stage's checkpoints live in <dir>/<stage>/<key>/checkpoint-<step>, outside its atomic output. The key hashes what
DVC knows of the stage's inputs (its command, its deps' hashes: code, data and models, and its params), so a run
after any change starts afresh rather than resuming a stale checkpoint. Run a killed stage again (`make sft`,
`dvc repro`) and it resumes from its last complete checkpoint; a stage that finishes removes <dir>/<stage>.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from medforge import params
from medforge.provenance import stage_inputs


@dataclass
class CheckpointParams:
    every_steps: int        # save every this many optimizer steps (0: by time only)
    every_minutes: float    # save when this many minutes have passed since the last save (0: by steps only)
    keep: int               # checkpoints kept per run, the newest
    dir: str                # <dir>/<stage>/<key of the stage's inputs>/checkpoint-<step>


def checkpoint_params() -> CheckpointParams:
    return params.load("checkpoints")


def inputs_key(stage: str) -> str | None:
    """A hash of the stage's command, deps and params as DVC sees them; None outside a DVC pipeline."""
    inputs = stage_inputs(stage)
    return inputs and hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_dir(c: CheckpointParams, stage: str) -> Path | None:
    """Where this run of `stage` checkpoints; None outside a DVC pipeline, where nothing tells a stale one apart."""
    key = inputs_key(stage)
    return Path(c.dir) / stage / key if key else None


def last_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint: the trainer writes trainer_state.json last, so one killed mid-save has none."""
    done = [p.parent for p in directory.glob("checkpoint-*/trainer_state.json")]
    return max(done, key=lambda p: int(p.name.rsplit("-", 1)[1]), default=None)


def clear(c: CheckpointParams, stage: str) -> None:
    shutil.rmtree(Path(c.dir) / stage, ignore_errors=True)


class SaveCheckpoints(TrainerCallback):
    """Asks the trainer to checkpoint every `every_steps` steps and whenever `every_minutes` have passed (never when
    `saving` is false); under several processes the ranks agree (the slowest clock decides): saving is collective."""

    def __init__(self, c: CheckpointParams, saving: bool = True):
        self.c, self.saving, self.last = c, saving, time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        args.save_total_limit = self.c.keep
        self.last = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        by_steps = self.saving and self.c.every_steps and state.global_step % self.c.every_steps == 0
        due = time.monotonic() - self.last >= self.c.every_minutes * 60
        by_time = self.saving and bool(self.c.every_minutes) and due
        if self.saving and self.c.every_minutes and args.world_size > 1:  # every rank, every step: a collective
            by_time = agreed(by_time)
        if (by_steps or by_time) and state.global_step < state.max_steps:
            control.should_save = True
            self.last = time.monotonic()
        # the loss of every step reaches the log before a save and at the end (medforge.train.mean_logged_loss)
        control.should_log |= control.should_save or state.global_step == state.max_steps


def agreed(flag: bool) -> bool:
    import torch
    import torch.distributed as dist
    value = torch.tensor([int(flag)], device="cuda" if torch.cuda.is_available() else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
