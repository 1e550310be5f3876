"""`make bench`: SFT and DPO training throughput on one GPU, medforge's fast configuration against a plain
baseline in the same command, on the reference setup of ../shared/FACTS.md (params.yaml `bench`).

  baseline  padded batches, gradient checkpointing, SDPA attention, full fp32 logits, no fused kernels;
            DPO: the reference model scored on every step
  fast      the training stages' own defaults on a GPU: padding-free batches with per-document varlen flash
            attention (medforge/attention.py), TRL's fused LM head, Liger layer kernels, no checkpointing, one
            large micro-batch instead of gradient accumulation; DPO: reference log-probs precomputed once

Both runs see the same samples in the same order and the same samples per optimizer step, so their per-step
losses must agree: speed must not change what is learned. The JSON states the largest difference.
Writes reports/bench.json; skips (exit 0) without a GPU. `--qlora` adds the 7B QLoRA memory run.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch
from transformers import TrainerCallback

from medforge import params
from medforge.formats import read_canonical, to_chat, to_preference
from medforge.io import write_json
from medforge.modeling import TinyParams
from medforge.train import LoraParams, SFTParams, make_trainer


@dataclass
class Run:
    batch_size: int  # the baseline's micro-batch; `fast` takes batch_size x accumulation in one
    accumulation: int
    steps: int
    warmup_steps: int  # left out of the throughput figures (kernel compilation, allocator warm-up)


@dataclass
class Params:
    sft_data: str
    dpo_data: str
    fallback_sft_data: str  # the project's own data, where ../shared is absent
    fallback_dpo_data: str
    model: TinyParams
    qlora_model: TinyParams
    max_length: int
    dpo_max_length: int
    lora: LoraParams
    learning_rate: float
    sft: Run
    dpo: Run
    qlora: Run
    peak_tflops: float  # dense bf16 of an H100 SXM (datasheet), for MFU
    out: str


class StepClock(TrainerCallback):
    """Wall time, input tokens seen and loss at the end of every optimizer step (the GPU synchronised first)."""

    def __init__(self):
        self.times, self.tokens, self.losses = [], [], []

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())
        self.tokens.append(state.num_input_tokens_seen)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(logs["loss"])

    def rate(self, warmup: int, per_step: float = 0.0) -> tuple[float, float]:
        """(tokens/s, units/s) over the steps after `warmup`; `per_step` units (samples, pairs) per step."""
        seconds = self.times[-1] - self.times[warmup - 1]
        return (self.tokens[-1] - self.tokens[warmup - 1]) / seconds, per_step * (len(self.times) - warmup) / seconds


def data_path(preferred: str, fallback: str) -> str:
    return preferred if Path(preferred).exists() else fallback


def token_length(tokenizer, messages: list[dict]) -> int:
    return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def build_model(arch: TinyParams, texts: list[str], out: Path) -> None:
    """The tiny default's builder (medforge/tiny.py) at `arch`'s size, in bf16, on the GPU where there is one (a 7B
    model initialises in seconds there)."""
    from medforge.tiny import build_tiny
    build_tiny(arch, texts, out, dtype=torch.bfloat16, device="cuda" if torch.cuda.is_available() else "cpu")
    release_memory()


def isolated(fn, *args, **kwargs):
    """`fn(*args)` in a fresh process on a GPU, so that neither GPU memory nor class-level kernel patches
    (Liger's) leak from one configuration into the next; inline on a CPU."""
    if not torch.cuda.is_available():
        return fn(*args, **kwargs)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def matmul_flops_per_token(arch: TinyParams) -> float:
    """Forward + input-gradient FLOPs per token of every weight matrix (LoRA trains no base weight, so no
    weight gradients): 4 x matmul parameters. Attention scores are counted separately from document lengths."""
    head = arch.hidden_size // arch.num_heads
    attention = arch.hidden_size * head * (2 * arch.num_heads + 2 * arch.num_kv_heads)
    mlp = 3 * arch.hidden_size * arch.intermediate_size
    return 4 * (arch.num_layers * (attention + mlp) + arch.vocab_size * arch.hidden_size)


def attention_flops(arch: TinyParams, length: int) -> float:
    """Causal attention of one document, forward (QK^T and AV: 2 n^2 d per layer) + backward (twice that)."""
    return 3 * 2 * length * length * arch.hidden_size * arch.num_layers


def summary(clock: StepClock, run: Run, samples_per_step: int, flops_per_sample: float | None, p: Params,
            seconds: float) -> dict:
    """Throughput after warm-up, peak memory, and MFU where the FLOPs per sample are known (SFT)."""
    tokens_per_s, samples_per_s = clock.rate(run.warmup_steps, samples_per_step)
    mfu = {} if flops_per_sample is None else {
        "mfu": round(samples_per_s * flops_per_sample / (p.peak_tflops * 1e12), 4)}
    return {"tokens_per_s": round(tokens_per_s), "samples_per_s": round(samples_per_s, 2),
            "peak_memory_gib": peak_memory_gib(), **mfu,
            "train_seconds": round(seconds, 1), "steps": len(clock.times), "losses": clock.losses}


def stage_params(p: Params, run: Run, init: str, fast: bool, section: str = "sft", **extra):
    """A training stage's params (`section`: sft or dpo) for one configuration; `fast` keeps params.yaml's speed
    knobs (auto), baseline turns every one off."""
    knobs = {} if fast else dict(gradient_checkpointing=True, liger_kernels=False,
                                 **({"chunked_lm_head": False} if section == "sft" else {}))
    return params.load(section, init=init, finetuning=extra.pop("finetuning", "lora"), max_steps=run.steps,
                       learning_rate=p.learning_rate, warmup_ratio=0.0, lr_scheduler_type="constant",
                       logging_steps=1, lora=p.lora,
                       batch_size=run.batch_size * (run.accumulation if fast else 1),
                       gradient_accumulation_steps=1 if fast else run.accumulation, **knobs, **extra)


def train(p: Params, sp: SFTParams, records: list[dict], attn: str, lengths: list[int], arch: TinyParams,
          run: Run) -> dict:
    release_memory()
    clock = StepClock()
    with tempfile.TemporaryDirectory() as scratch:
        trainer = make_trainer(sp, records, None, scratch, assistant_only_loss=True,
                               mp=params.load("model", base=sp.init, attn_implementation=attn), callbacks=[clock])
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    per_sample = matmul_flops_per_token(arch) * sum(lengths) / len(lengths) + sum(
        attention_flops(arch, n) for n in lengths) / len(lengths)
    return summary(clock, run, run.batch_size * run.accumulation, per_sample, p, seconds)


def bench_sft(p: Params, model_dir: str, records: list[dict], lengths: list[int]) -> dict:
    run = p.sft
    baseline = isolated(train, p, stage_params(p, run, model_dir, fast=False, max_length=p.max_length,
                                               packing=False), records, "sdpa", lengths, p.model, run)
    fast = isolated(train, p, stage_params(p, run, model_dir, fast=True, max_length=None, packing=False,
                                           padding_free=True), records, "auto", lengths, p.model, run)
    return compare(baseline, fast, "tokens_per_s")


def dpo_run(p: Params, model_dir: str, pairs: list[dict], fast: bool, **knobs) -> dict:
    """The dpo stage's own data path and trainer (stages.dpo.make_trainer) on `pairs`, length-grouped in both
    configurations (the same pairs in every step); `fast` also precomputes the reference log-probs."""
    from medforge.modeling import load_tokenizer
    from medforge.preference import pair_records
    from stages.dpo import make_trainer
    run = p.dpo
    sp = stage_params(p, run, model_dir, fast=fast, section="dpo", max_length=p.dpo_max_length,
                      precompute_ref_log_probs=fast, group_by_length=True, **knobs)
    mp = params.load("model", base=model_dir, attn_implementation="auto" if fast else "sdpa")
    tokenizer = load_tokenizer(model_dir, mp)
    release_memory()
    clock = StepClock()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "pairs.jsonl"
        path.write_text("".join(json.dumps(pair, ensure_ascii=False) + "\n" for pair in pairs), encoding="utf-8")
        train = pair_records("dpo", sp, tokenizer, path, Path(scratch) / "datasets", tokenize=True, grouped=True)
        trainer = make_trainer(sp, mp, tokenizer, train, None, scratch, [clock],
                               include_num_input_tokens_seen="non_padding", train_sampling_strategy="sequential")
        start = time.perf_counter()  # the precomputed reference pass counts: it is part of the run
        trainer.train()
        seconds = time.perf_counter() - start
    pairs_done = len(clock.times) * run.batch_size * run.accumulation
    return {**summary(clock, run, run.batch_size * run.accumulation, None, p, seconds),
            "pairs_per_s_whole_run": round(pairs_done / seconds, 2)}


def bench_dpo(p: Params, model_dir: str, pairs: list[dict]) -> dict:
    return compare(isolated(dpo_run, p, model_dir, pairs, False), isolated(dpo_run, p, model_dir, pairs, True),
                   "samples_per_s")


def compare(baseline: dict, fast: dict, key: str) -> dict:
    diffs = [abs(a - b) / abs(a) for a, b in zip(baseline["losses"], fast["losses"], strict=True)]
    return {"baseline": baseline, "fast": fast, "speedup": round(fast[key] / baseline[key], 2),
            "max_relative_loss_difference": round(max(diffs), 6), "first_step_loss_difference": round(diffs[0], 6)}


def bench_qlora(p: Params, texts: list[str], records: list[dict], lengths: list[int], work: Path) -> dict:
    """QLoRA 4-bit NF4 on a random-initialised 7B-dimension Llama: peak memory and tokens/s (fast knobs +
    gradient checkpointing, the memory-lean setting)."""
    model_dir = work / "qlora-base"
    isolated(build_model, p.qlora_model, texts, model_dir)
    sp = stage_params(p, p.qlora, str(model_dir), fast=True, finetuning="qlora", max_length=None, packing=False,
                      padding_free=True, gradient_checkpointing=True)
    return isolated(train, p, sp, records, "auto", lengths, p.qlora_model, p.qlora)


def load_data(p: Params) -> tuple[dict, list[dict], list[dict]]:
    """SFT conversations and preference pairs through the project's importers (the `prepare` stage's)."""
    sft_path, dpo_path = data_path(p.sft_data, p.fallback_sft_data), data_path(p.dpo_data, p.fallback_dpo_data)
    chats = [{"messages": r["messages"]} for r in read_canonical(sft_path, to_chat)]
    pairs = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in read_canonical(dpo_path, to_preference)]
    return {"sft_data": sft_path, "dpo_data": dpo_path}, chats, pairs


def measure(p: Params, chats: list[dict], pairs: list[dict], work: Path, only: str | None = None,
            qlora: bool = False) -> dict:
    from medforge.modeling import load_tokenizer, model_params
    texts = [m["content"] for c in chats for m in c["messages"]] + [
        t for r in pairs for t in (r["chosen"], r["rejected"], *(m["content"] for m in r["prompt"]))]
    model_dir = work / "base"
    isolated(build_model, p.model, texts, model_dir)
    tokenizer = load_tokenizer(model_dir, model_params())
    lengths = [token_length(tokenizer, c["messages"]) for c in chats]
    kept = [(c, n) for c, n in zip(chats, lengths) if n <= p.max_length]
    report = {"sft_samples": {"used": len(kept), "over_max_length_dropped": len(chats) - len(kept)}}
    chats, lengths = [c for c, _ in kept], [n for _, n in kept]
    report["sft_samples"]["mean_tokens"] = round(sum(lengths) / len(lengths), 1)
    if only in (None, "sft"):
        report["sft"] = bench_sft(p, str(model_dir), chats, lengths)
    if only in (None, "dpo"):
        report["dpo"] = bench_dpo(p, str(model_dir), pairs)
    if qlora:
        report["qlora_7b"] = bench_qlora(p, texts, chats, lengths, work)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["sft", "dpo"], help="run one benchmark")
    parser.add_argument("--qlora", action="store_true", help="also the 7B QLoRA 4-bit memory benchmark")
    cli = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench: no CUDA GPU here; nothing to measure (skipped)")
        return
    p = params.load("bench")
    sources, chats, pairs = load_data(p)
    report = {"date": date.today().isoformat(), "device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "python": platform.python_version(), **sources, "params": dataclasses.asdict(p)}
    with tempfile.TemporaryDirectory(prefix="medforge-bench-") as work:
        report.update(measure(p, chats, pairs, Path(work), cli.only, cli.qlora))
    write_json(p.out, report)
    print(table(report))


def table(report: dict) -> str:
    rows = [f"bench {report['date']} on {report['device']}",
            "| run | config | tokens/s | samples/s | peak GiB | MFU | speed-up | max loss diff |",
            "|---|---|---|---|---|---|---|---|"]
    for name in ("sft", "dpo"):
        if name in report:
            r = report[name]
            for config in ("baseline", "fast"):
                c = r[config]
                rows.append(f"| {name} | {config} | {c['tokens_per_s']} | {c['samples_per_s']} | "
                            f"{c['peak_memory_gib']} | {c.get('mfu', '')} | "
                            f"{r['speedup'] if config == 'fast' else ''} | "
                            f"{r['max_relative_loss_difference'] if config == 'fast' else ''} |")
    if "qlora_7b" in report:
        c = report["qlora_7b"]
        rows.append(f"| qlora 7B | fast + checkpointing | {c['tokens_per_s']} | {c['samples_per_s']} | "
                    f"{c['peak_memory_gib']} | {c['mfu']} | | |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
