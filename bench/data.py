"""`make bench-data`: the `prepare` stage on a large corpus, this checkout's code side by side with a baseline
revision's (params.yaml `bench_data.baseline`), in one command: seconds, records/s and peak RSS of each.

Two corpora, generated here: `records` ShareGPT conversations (JSONL, a few in a hundred repeated so deduplication
has work) and a pretraining `.txt` file of `text_mb` MB (one document per line). Each run is a fresh process of the
real stage (`python -m stages.prepare`, with the stage's own command-line files): its peak RSS from the kernel
(wait4: the largest process) and summed over its worker processes (sampled). Both revisions must give
byte-identical outputs (kinds added since the baseline: empty files); the bench checks it. Writes
reports/data_bench.json.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import shlex
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import date
from io import BytesIO
from pathlib import Path

import yaml

from medforge import params
from medforge.io import write_json
from medforge.provenance import device, git

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("头痛 发热 咳嗽 高血压 糖尿病 胸痛 腹泻 皮疹 失眠 哮喘 请 休息 多喝水 就医 检查 血常规 心内科 消化科 呼吸科 "
         "fever cough headache hypertension diabetes rash insomnia asthma clinic rest fluids doctor").split()


@dataclass
class Params:
    records: int  # ShareGPT conversations in the SFT corpus
    text_mb: int  # size of the pretraining .txt corpus
    baseline: str  # the revision to compare with (a commit, tag or branch)
    out: str


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, k=n))


def write_corpora(directory: Path, p: Params) -> tuple[Path, Path]:
    """The SFT JSONL (2% of conversations repeated) and the pretraining text, deterministic."""
    rng = random.Random(0)
    sft, text = directory / "sharegpt.jsonl", directory / "corpus.txt"
    with open(sft, "w", encoding="utf-8") as f:
        recent = []
        for _ in range(p.records):
            if recent and rng.random() < 0.02:
                f.write(rng.choice(recent))
                continue
            turns = [{"from": speaker, "value": sentence(rng, rng.randint(8, 60))}
                     for _ in range(rng.randint(1, 3)) for speaker in ("human", "gpt")]
            line = json.dumps({"conversations": turns}, ensure_ascii=False) + "\n"
            recent = [*recent[-99:], line]
            f.write(line)
    with open(text, "w", encoding="utf-8") as f:
        while f.tell() < p.text_mb * 2**20:
            f.write("\n".join(sentence(rng, rng.randint(20, 200)) for _ in range(1000)) + "\n")
    return sft, text


def checkout(revision: str, directory: Path) -> Path:
    """The revision's code and params.yaml (`git archive` of stages/, medforge/, params.yaml) in `directory`."""
    archive = subprocess.run(["git", "archive", revision, "stages", "medforge", "params.yaml"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(directory, filter="data")
    return directory


def run_prepare(code: Path, workdir: Path, data: dict) -> dict:
    """One `prepare` run of `code` on `data` (overrides of the `data` section of the params.yaml beside `code`) in
    `workdir`: time, peak RSS, and the sha256 of each output file."""
    params.write_overridden(workdir / "params.yaml", {"data": data}, code / "params.yaml")
    cmd = shlex.split(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["prepare"]["cmd"])
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, *cmd[1:]], cwd=workdir, env={**os.environ, "PYTHONPATH": str(code)},
                               stdout=subprocess.DEVNULL)
    tree = {"peak": 0}
    sampler = threading.Thread(target=sample_tree_rss, args=(process.pid, tree), daemon=True)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    sampler.join()
    if status:
        raise SystemExit(f"prepare failed in {workdir} (code {code})")
    out = workdir / cmd[cmd.index("--out") + 1]
    metrics = json.loads((workdir / cmd[cmd.index("--metrics") + 1]).read_text())
    read = sum(m["read"] for m in metrics.values() if isinstance(m, dict) and "read" in m)
    return {"seconds": round(seconds, 1), "records_per_second": round(read / seconds), "records": read,
            "peak_rss_mb": round(usage.ru_maxrss / 1024), "peak_tree_rss_mb": round(tree["peak"] / 2**20),
            "outputs_sha256": {path.name: file_sha256(path) for path in sorted(out.iterdir())}}


def sample_tree_rss(pid: int, tree: dict, every: float = 0.05) -> None:
    """The peak of the summed RSS of `pid` and its worker processes, sampled until it exits (the kernel's peak,
    `peak_rss_mb`, is the largest single process's)."""
    import psutil
    try:
        root = psutil.Process(pid)
        while root.status() != psutil.STATUS_ZOMBIE:
            total = 0
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += process.memory_info().rss
            tree["peak"] = max(tree["peak"], total)
            time.sleep(every)
    except psutil.NoSuchProcess:
        pass


def file_sha256(path: Path) -> str:
    """Read in chunks: a forked child's peak RSS starts from this process's (Linux copies the high-water mark), so
    this process must never hold an output whole."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def identical(baseline: dict, now: dict) -> bool:
    """Every file the baseline wrote is byte for byte the same; files it did not write (kinds added since) are empty."""
    empty = hashlib.sha256(b"").hexdigest()
    return all(now.get(name) == digest for name, digest in baseline.items()) and \
        all(digest == empty for name, digest in now.items() if name not in baseline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, help="instead of bench_data.records")
    parser.add_argument("--text-mb", type=int, help="instead of bench_data.text_mb")
    parser.add_argument("--baseline", help="instead of bench_data.baseline")
    args = parser.parse_args()
    p = params.load("bench_data", **{k: v for k, v in vars(args).items() if v is not None})
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        # in a process of their own, for the same reason as file_sha256
        sft, text = scratch / "sharegpt.jsonl", scratch / "corpus.txt"
        writer = multiprocessing.get_context("spawn").Process(target=write_corpora, args=(scratch, p))
        writer.start()
        writer.join()
        if writer.exitcode:
            raise SystemExit(f"writing the corpora failed (exit code {writer.exitcode})")
        codes = {"baseline": checkout(p.baseline, scratch / "baseline"), "this checkout": ROOT}
        corpora = {"sft": {"sft": [str(sft)], "pretrain": [], "preference": []},
                   "pretrain": {"sft": [], "pretrain": [str(text)], "preference": []}}
        results = {}
        for corpus, data in corpora.items():
            for name, code in codes.items():
                workdir = scratch / f"{corpus}-{name.replace(' ', '-')}"
                workdir.mkdir()
                results.setdefault(corpus, {})[name] = run_prepare(code, workdir, data)
                print(corpus, name, json.dumps(results[corpus][name]), flush=True)
    for corpus, runs in results.items():
        base, now = runs["baseline"], runs["this checkout"]
        runs["identical_outputs"] = identical(base["outputs_sha256"], now["outputs_sha256"])
        runs["speedup"] = round(base["seconds"] / now["seconds"], 2)
        runs["peak_rss_ratio"] = round(now["peak_rss_mb"] / base["peak_rss_mb"], 3)
    report = {"date": date.today().isoformat(), "machine": device(), "records": p.records, "text_mb": p.text_mb,
              "baseline": f"{p.baseline} ({git('rev-parse', '--short', p.baseline)})",
              "this_checkout": git("rev-parse", "--short", "HEAD"), **results}
    write_json(p.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
