"""What produced an artifact. Every metrics file gets a `provenance` entry (`stamp()`), every model directory a
provenance.json with the same and its lineage:

    {"weights_sha256": "...", "parent": {"path": "models/sft", "weights_sha256": "..."}, "stage": "dpo", ...}

`parent` is the model the output was trained, merged or copied from (its path as params.yaml names it, and its
fingerprint; a Hugging Face id has none). A LoRA adapter only means something on the exact model it was trained
on, so loading one (medforge.modeling.load_model) asks `parent_of` for that model: present and unchanged, or a
LineageError. Chains resolve one link at a time: LoRA DPO -> LoRA SFT -> LoRA PT -> base.

`python -m medforge.provenance` prints this machine's fingerprint (`make env`); `... times METRICS MODELS` each stage's
wall time, from the provenance of the outputs in those folders.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

FILE = "provenance.json"
LOCKS = ("requirements.lock", "requirements-gpu.lock")
LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes", "dvc")


class LineageError(RuntimeError):
    pass


def weights_sha256(directory: str | Path) -> str:
    """One sha256 over the directory's safetensors and GGUF files (names and bytes, in name order)."""
    digest = hashlib.sha256()
    for path in sorted([*Path(directory).glob("*.safetensors"), *Path(directory).glob("*.gguf")]):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def read(directory: str | Path) -> dict:
    path = Path(directory) / FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def fingerprint(model: str | Path) -> str | None:
    """A local model directory's weights fingerprint (as its provenance.json records it, else hashed now);
    None for a model that is not a local directory (a Hugging Face id)."""
    if not Path(model).is_dir():
        return None
    return read(model).get("weights_sha256") or weights_sha256(model)


def write(directory: str | Path, parent: str | Path | None, **facts) -> dict:
    """Record the weights in `directory`, the model they were made from (None: from nothing, e.g. tiny) and
    `stamp(**facts)`; returns the record."""
    record = {"weights_sha256": weights_sha256(directory)}
    if parent is not None:
        record["parent"] = {"path": str(parent), "weights_sha256": fingerprint(parent)}
    record |= stamp(**facts)
    (Path(directory) / FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def git(*args: str) -> str | None:
    result = subprocess.run(["git", *args], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def device() -> str:
    import torch
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    return f"CPU {model}, {os.cpu_count()} cores, " + ("with" if "avx512_bf16" in cpuinfo else "without") + \
        " AVX512-BF16"


def environment() -> dict:
    """The code, locks, libraries and device this process runs with."""
    import importlib.metadata
    import torch
    status = git("status", "--porcelain", "--untracked-files=no")
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status),
            **{f"{lock.replace('.', '_').replace('-', '_')}_sha256": sha256(lock) for lock in LOCKS
               if Path(lock).exists() and (lock == LOCKS[0] or torch.cuda.is_available())},
            "python": platform.python_version(), "libraries": versions,
            "cuda": torch.version.cuda if torch.cuda.is_available() else None, "device": device(),
            "cpu_kernels": cpu_kernels()}


def cpu_kernels() -> dict:
    """The CPU kernels this process runs (medforge pins AVX2: medforge/__init__.py) and its thread count: with the
    same kernels and threads, CPUs give the same numbers bit for bit."""
    import torch
    from medforge import CPU_KERNELS
    return {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
            **{name: os.environ.get(name) for name in CPU_KERNELS}}


def stage_inputs(stage: str) -> dict | None:
    """The stage's command and its deps' hashes (params values for params), as DVC sees them and dvc.lock records
    them; None where `stage` is not a stage of a DVC pipeline here."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    try:
        with Repo() as repo:
            (definition,) = repo.stage.collect(stage)
            return {"cmd": definition.cmd, "deps": {str(d): d.get_hash().value for d in definition.deps}}
    except DvcException:
        return None


def stamp(**facts) -> dict:
    """What produced this process's outputs: the DVC stage running it and its deps' hashes (DVC names the stage in
    DVC_STAGE), the environment, `facts` (precision, seed, world size, ...) and the wall time since the process
    started."""
    import psutil
    stage = os.environ.get("DVC_STAGE")
    inputs = stage_inputs(stage) if stage else None
    return {"stage": stage, "deps": inputs and inputs["deps"], **environment(), **facts,
            "wall_seconds": round(time.time() - psutil.Process().create_time(), 1)}


def write_metrics(path: str | Path, metrics: dict, **facts) -> None:
    """A stage's metrics JSON, with its `provenance` (stamp(**facts)): the deps as one sha256 of the mapping that
    dvc.lock records (`dvc metrics show` gives every leaf a column; model directories keep the whole mapping)."""
    from medforge.io import write_json
    record = stamp(**facts)
    deps = record.pop("deps")
    record["deps_sha256"] = deps and hashlib.sha256(json.dumps(deps, sort_keys=True, default=str).encode()).hexdigest()
    write_json(path, {**metrics, "provenance": record})


def parent_of(adapter: str | Path) -> str | None:
    """The model a LoRA adapter was trained on, checked to be there with the weights it was trained on; None for an
    adapter without provenance.json (trained elsewhere: its adapter_config.json is all there is to go by)."""
    parent = read(adapter).get("parent")
    if parent is None:
        return None
    path, trained_on = parent["path"], parent["weights_sha256"]
    if trained_on is None:  # a hub id
        return path
    if not Path(path).is_dir():
        raise LineageError(f"{adapter}: this LoRA adapter was trained on {path}, which no longer exists; restore "
                           f"it (dvc pull / dvc checkout) or retrain the adapter (dvc repro)")
    now = fingerprint(path)
    if now != trained_on:
        raise LineageError(f"{adapter}: this LoRA adapter was trained on {path} with weights {trained_on[:12]}, but "
                           f"{path} now holds {now[:12]}; retrain the adapter on it (dvc repro) or restore that model")
    return path


def stage_times(metrics: str, models: str) -> dict[str, float]:
    """Each stage's wall time, from the provenance its metrics files and model directories record (the folders
    holding them)."""
    records = [json.loads(p.read_text()).get("provenance", {}) for p in sorted(Path(metrics).rglob("*.json"))]
    records += [json.loads(p.read_text()) for p in sorted(Path(models).rglob(FILE))]
    return {r["stage"]: r["wall_seconds"] for r in records if r.get("stage") and "wall_seconds" in r}


def main() -> None:
    if sys.argv[1:2] == ["times"]:
        times = stage_times(*sys.argv[2:])
        print("Wall time per stage (provenance):")
        width = max(map(len, times), default=0)
        for stage, seconds in sorted(times.items(), key=lambda item: -item[1]):
            print(f"  {stage:<{width}} {seconds:8.1f} s")
        print(f"  {'all':<{width}} {sum(times.values()):8.1f} s")
    else:
        print(json.dumps(environment(), indent=2))


if __name__ == "__main__":
    main()
