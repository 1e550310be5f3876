"""Run a training stage on one process or many: `python -m medforge.launch stages.sft` (every training stage's cmd).

Reads the environment the Makefile exports: DIST (single | ddp | zero2 | zero3 | zero3_offload | fsdp2), NPROC
(processes per machine), NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT. One process with DIST=single runs the
stage in this process. Otherwise a GPU machine execs `accelerate launch` with configs/accelerate/<DIST>.yaml,
and a CPU machine execs torchrun with gloo (DDP only; `accelerate launch --cpu` starts a single process).
"""
from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

DISTS = ("single", "ddp", "zero2", "zero3", "zero3_offload", "fsdp2")
CPU_DISTS = ("single", "ddp")
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


def settings(env=os.environ) -> dict:
    """The launch settings from the environment, validated: a bad value stops with one line naming it."""
    s = {"DIST": env.get("DIST") or "single", "MASTER_ADDR": env.get("MASTER_ADDR") or "127.0.0.1"}
    if s["DIST"] not in DISTS:
        raise SystemExit(f"DIST={s['DIST']}: unknown; choose one of {', '.join(DISTS)}")
    for key, default, least in (("NPROC", 1, 1), ("NNODES", 1, 1), ("NODE_RANK", 0, 0), ("MASTER_PORT", 29500, 1)):
        value = env.get(key) or str(default)
        if not value.isdigit() or int(value) < least:
            raise SystemExit(f"{key}={value}: expected an integer >= {least}")
        s[key] = int(value)
    if s["DIST"] == "single" and s["NPROC"] * s["NNODES"] > 1:
        raise SystemExit(f"DIST=single runs one process, not NPROC={s['NPROC']} x NNODES={s['NNODES']}: "
                         f"choose DIST=ddp (or {', '.join(DISTS[2:])} on GPUs)")
    return s


def command(module: str, args: list[str], s: dict, gpu: bool) -> list[str]:
    """The launcher command line for a multi-process (or DeepSpeed/FSDP) run of `module`."""
    if gpu:
        return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / f"{s['DIST']}.yaml"),
                "--num_processes", str(s["NPROC"] * s["NNODES"]), "--num_machines", str(s["NNODES"]),
                "--machine_rank", str(s["NODE_RANK"]), "--main_process_ip", s["MASTER_ADDR"],
                "--main_process_port", str(s["MASTER_PORT"]), "-m", module, *args]
    if s["DIST"] not in CPU_DISTS:
        raise SystemExit(f"DIST={s['DIST']} needs CUDA GPUs (DeepSpeed/FSDP); without one use DIST=ddp or single")
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(s["NPROC"]),
            "--nnodes", str(s["NNODES"]), "--node_rank", str(s["NODE_RANK"]), "--master_addr", s["MASTER_ADDR"],
            "--master_port", str(s["MASTER_PORT"]), "-m", module, *args]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit("usage: python -m medforge.launch MODULE [ARGS...]   (e.g. stages.sft)")
    module, args = argv[0], argv[1:]
    s = settings()
    if s["DIST"] == "single":
        sys.argv = [module, *args]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    import torch
    cmd = command(module, args, s, gpu=torch.cuda.is_available())
    print("launch:", " ".join(cmd), flush=True)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
