"""`make bench-cpu-numerics`: which CPU kernel choices change the training numbers, side by side in one command.

The SFT stage (its params, `sft.init`, the prepared data) trains `--steps` steps in a fresh process per variant:
medforge's own setting (AVX2 kernels in PyTorch, oneDNN and MKL: medforge/__init__.py), this CPU's own widest
kernels (no pins), each library left to pick its own alone, PyTorch's unvectorised kernels, MKL's compatible code
path, another thread count, and bf16 autocast. Each variant's per-step losses are compared with the first's:
bitwise, and the largest relative difference. Writes reports/cpu_numerics_bench.json.
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
from pathlib import Path

from medforge import CPU_KERNELS
from medforge.io import write_json
from medforge.provenance import device



def variants() -> dict[str, dict]:
    """Each variant's environment; "this CPU's own" asks each library for what it would pick unpinned (PyTorch's
    capability read in a process that does not import medforge: asking for one the CPU lacks would crash)."""
    own = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         env={k: v for k, v in os.environ.items() if k not in CPU_KERNELS}, capture_output=True,
                         text=True, check=True).stdout.strip().lower()
    unpinned = {"ATEN_CPU_CAPABILITY": own, "ONEDNN_MAX_CPU_ISA": "ALL", "MKL_CBWR": "AUTO"}
    return {
        "medforge (AVX2 kernels)": {},
        f"this CPU's own ({own}, no pins)": unpinned,
        **{f"{name}={value} alone": {name: value} for name, value in unpinned.items()},
        "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},  # PyTorch's unvectorised kernels
        "MKL_CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
        "1 thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        "bf16 autocast": {"MEDFORGE_BENCH_BF16": "1"},
    }


def train(steps: int) -> dict:
    """In the worker process: the SFT stage's trainer for `steps` steps; its losses and seconds per step."""
    from bench.throughput import StepClock
    from medforge import params
    from medforge.train import make_trainer
    p = params.load("sft", max_steps=steps, logging_steps=1)
    if os.environ.get("MEDFORGE_BENCH_BF16"):
        p = dataclasses.replace(p, bf16=True)
    clock = StepClock()
    with tempfile.TemporaryDirectory() as out:
        make_trainer(p, Path("data/prepared/sft_train.jsonl"), None, out, assistant_only_loss=True,
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
    for name, env in variants().items():
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "bench.cpu_numerics", "--worker", "--steps", str(args.steps)],
                             env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout
        results[name] = json.loads(out.split("RESULT ", 1)[1]) | {"wall_seconds": round(time.perf_counter() - start)}
    reference = next(iter(results.values()))["losses"]
    for r in results.values():
        r["bitwise_equal"] = r["losses"] == reference
        r["max_relative_difference"] = max(abs(a - b) / abs(b) for a, b in zip(r["losses"], reference))
    report = {"date": date.today().isoformat(), "machine": device(), "steps": args.steps, "variants": results}
    write_json("reports/cpu_numerics_bench.json", report)
    for name, r in results.items():
        print(f"{name:40} bitwise equal: {r['bitwise_equal']!s:5}  max relative loss difference "
              f"{r['max_relative_difference']:.1e}  {r['seconds_per_step']} s/step")


if __name__ == "__main__":
    main()
