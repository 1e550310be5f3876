"""`make bench-cpu-attention`: SFT step time on this machine's CPU for the two ways of keeping packed conversations
apart, side by side in one command: SDPA with a block-diagonal mask over the whole padding-free row (transformers'
own handling of packed position ids) against medforge's `varlen` attention (SDPA once per conversation).

Both train the same model (the pipeline's `sft.init`) on the same packed SFT batches with the stage's params for
`--steps` steps; the first step of each is a warm-up. The first step's loss must agree (same attention, different
kernels); later steps drift apart by float rounding that Adam amplifies (its first updates are near sign(gradient)).
Writes reports/cpu_attention_bench.json.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
from datetime import date
from pathlib import Path

from bench.throughput import StepClock
from medforge import params
from medforge.io import write_json
from medforge.train import make_trainer


def run(attn: str, steps: int, train_file: str) -> dict:
    p = params.load("sft", max_steps=steps, logging_steps=1)
    mp = params.load("model", attn_implementation=attn, dtype="float32")
    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        trainer = make_trainer(p, Path(train_file), None, out, assistant_only_loss=True, mp=mp,
                               callbacks=[clock])
        trainer.train()
    tokens_per_s, steps_per_s = clock.rate(warmup=1, per_step=1)
    seconds_per_step = 1 / steps_per_s
    return {"seconds_per_step": round(seconds_per_step, 4), "tokens_per_s": round(tokens_per_s), "losses": clock.losses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=21)
    parser.add_argument("--train-file", default="data/prepared/sft_train.jsonl")
    args = parser.parse_args()
    results = {name: run(name, args.steps, args.train_file) for name in ("sdpa", "varlen")}
    drift = [abs(a - b) / abs(a) for a, b in zip(results["sdpa"]["losses"], results["varlen"]["losses"])]
    report = {"date": date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores", "steps": args.steps, **results,
              "speedup": round(results["sdpa"]["seconds_per_step"] / results["varlen"]["seconds_per_step"], 2),
              "first_step_relative_loss_difference": drift[0], "max_relative_loss_difference": max(drift)}
    write_json("reports/cpu_attention_bench.json", report)
    print(f"sdpa {results['sdpa']['seconds_per_step']} s/step, varlen {results['varlen']['seconds_per_step']} "
          f"s/step: {report['speedup']}x; relative loss difference {drift[0]:.1e} at step 1, {max(drift):.1e} at most")


if __name__ == "__main__":
    main()
