"""`make bench-cpu-numerics`: which CPU kernel choices change the training numbers, side by side in one command.

The SFT stage (its params, `sft.init`, the prepared data) trains `--steps` steps in a fresh process per variant: this
CPU's own kernels, then each variable that picks other kernels (PyTorch's ATEN_CPU_CAPABILITY, oneDNN's
ONEDNN_MAX_CPU_ISA, MKL's MKL_CBWR), another thread count, and bf16 autocast (what `bf16: auto` chose on CPUs with
AVX512-BF16 before). Each variant's per-step losses are compared with the first's: bitwise, and the largest relative
difference. Writes reports/cpu_numerics_bench.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date

from medforge.io import write_json
from medforge.provenance import device

VARIANTS = {
    "this CPU": {},
    "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},  # PyTorch's unvectorised kernels
    "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "ONEDNN_MAX_CPU_ISA=AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "MKL_CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
    "1 thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "bf16 autocast": {"MEDFORGE_BENCH_BF16": "1"},
}


def train(steps: int) -> dict:
    """In the worker process: the SFT stage's trainer for `steps` steps; its losses and seconds per step."""
    from bench.throughput import StepClock
    from medforge import params
    from medforge.train import make_trainer, read_records
    p = params.load("sft", max_steps=steps, logging_steps=1)
    if os.environ.get("MEDFORGE_BENCH_BF16"):
        p = dataclasses.replace(p, bf16=True)
    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        make_trainer(p, read_records("data/prepared/sft_train.jsonl"), None, out, assistant_only_loss=True,
                     mp=params.load("model"), callbacks=[clock]).train()
    return {"losses": clock.losses, "seconds_per_step": round(1 / clock.rate(warmup=1, per_step=1)[1], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(train(args.steps)))
        return
    results = {}
    for name, env in VARIANTS.items():
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "bench.cpu_numerics", "--worker", "--steps", str(args.steps)],
                             env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout
        results[name] = json.loads(out.split("RESULT ", 1)[1]) | {"wall_seconds": round(time.perf_counter() - start)}
    reference = results["this CPU"]["losses"]
    for r in results.values():
        r["bitwise_equal"] = r["losses"] == reference
        r["max_relative_difference"] = max(abs(a - b) / abs(b) for a, b in zip(r["losses"], reference))
    report = {"date": date.today().isoformat(), "machine": device(), "steps": args.steps, "variants": results}
    write_json("reports/cpu_numerics_bench.json", report)
    for name, r in results.items():
        print(f"{name:30} bitwise equal: {r['bitwise_equal']!s:5}  max relative loss difference "
              f"{r['max_relative_difference']:.1e}  {r['seconds_per_step']} s/step")


if __name__ == "__main__":
    main()
