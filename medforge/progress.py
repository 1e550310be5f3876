"""Progress of a training stage: transformers' bar in a terminal, a line each half minute elsewhere (CI, logs)."""
from __future__ import annotations

import sys
import time

from transformers import TrainerCallback

EVERY_SECONDS = 30


def in_terminal() -> bool:
    return sys.stderr.isatty()


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


class ProgressLines(TrainerCallback):
    """`sft: step 120/600 (20%), loss 1.234, 5,400 tokens/s, 4 min 10 s left`, every EVERY_SECONDS and at the end."""

    def __init__(self, stage: str):
        self.stage, self.loss = stage, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = self.last = time.monotonic()
        self.first_step, self.first_tokens = state.global_step, state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.loss = (logs or {}).get("loss", self.loss)

    def on_step_end(self, args, state, control, **kwargs):
        now = time.monotonic()
        if now - self.last < EVERY_SECONDS and state.global_step < state.max_steps:
            return
        self.last, elapsed, done = now, now - self.start, state.global_step - self.first_step
        parts = [f"step {state.global_step}/{state.max_steps} ({100 * state.global_step // state.max_steps}%)"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        if state.num_input_tokens_seen > self.first_tokens:
            parts.append(f"{(state.num_input_tokens_seen - self.first_tokens) / elapsed:,.0f} tokens/s")
        parts.append(f"{duration(elapsed / max(done, 1) * (state.max_steps - state.global_step))} left")
        print(f"{self.stage}: " + ", ".join(parts), flush=True)
