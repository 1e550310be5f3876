"""Stage `eval@NAME`: score one model with lm-eval-harness on the held-out sets, plus sample generations.

    python -m eval.run --model MODEL --metrics FILE --samples FILE [--bits 4|8]

MODEL is an HF model directory (`--bits 4|8`: loaded in NF4 / int8 with bitsandbytes) or a GGUF file, scored by
llama.cpp itself (eval/llama_cpp_lm.py) on the same task text, rendered with the tokenizer stored beside it.
Besides the scores: held-out tool-call accuracy (`tools`), size on disk, load time and greedy generation speed of
the sample generations.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from eval.tasks import render, write_tasks
from medforge import params, provenance, tools
from medforge.formats import read_canonical, to_chat
from medforge.io import write_json
from medforge.modeling import generate_replies, load_model, load_tokenizer, model_params
from medforge.paths import stage_paths


@dataclass
class Params:
    mcq: str
    chat: str
    preference: str | None
    tools: str | None  # held-out tool calls: {"messages": [..., the expected call], "tools"}
    extra_tasks: list[str]
    num_fewshot: int
    batch_size: int
    samples: int
    max_new_tokens: int


def lm_eval_scores(lm, tokenizer, p: Params) -> dict:
    """lm-eval's scores of `lm` (an lm-eval model) on the held-out tasks, rendered with `tokenizer`."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    with tempfile.TemporaryDirectory(prefix="medforge-tasks-") as tmp:
        names = write_tasks(Path(tmp), tokenizer, p.mcq, p.chat, p.preference)
        # Indexing lm-eval's built-in tasks reads ~13,000 YAML files (12 s here): only when extra_tasks need them.
        tasks = TaskManager(include_path=tmp, include_defaults=bool(p.extra_tasks))
        out = lm_eval.simple_evaluate(model=lm, tasks=names + p.extra_tasks, num_fewshot=p.num_fewshot,
                                      task_manager=tasks, log_samples=False, bootstrap_iters=1000)
    # Accuracies get lm-eval's closed-form standard error (no bootstrap); answer_ppl's own aggregation gets none.
    results = out["results"]
    scores = {
        "mcq_acc": results["medforge_mcq"]["acc,none"],
        "mcq_acc_stderr": results["medforge_mcq"]["acc_stderr,none"],
        "mcq_acc_norm": results["medforge_mcq"]["acc_norm,none"],
        "answer_ppl": results["medforge_answer_ppl"]["answer_ppl,none"],
    }
    if "medforge_preference" in results:
        scores["preference_acc"] = results["medforge_preference"]["acc,none"]
        scores["preference_acc_stderr"] = results["medforge_preference"]["acc_stderr,none"]
    for task in p.extra_tasks:
        scores.update({f"{task}/{k.split(',')[0]}": v for k, v in results.get(task, {}).items()
                       if isinstance(v, (int, float))})
    return scores


def tool_call_scores(variant, p: Params) -> dict:
    """Held-out tool use: the first call in each greedy reply against the expected one. tool_call_acc: the right
    function with the expected arguments (parsed JSON, compared as values); tool_name_acc: the right function."""
    records = read_canonical(p.tools, to_chat)
    expected = [tools.as_call(r["messages"][-1]["tool_calls"][0]["function"]) for r in records]
    replies, _ = variant.generate([r["messages"][:-1] for r in records], p.max_new_tokens,
                                  [r.get("tools") for r in records], batch_size=p.batch_size)
    got = [(tools.parse(reply)[1] or [None])[0] for reply in replies]
    named = [g is not None and g["name"] == e["name"] for g, e in zip(got, expected)]
    return {"tool_call_acc": sum(g == e for g, e in zip(got, expected)) / len(records),
            "tool_name_acc": sum(named) / len(records)}


def sample_prompts(p: Params) -> list[list[dict]]:
    """The first `p.samples` held-out conversations, up to their first assistant turn."""
    prompts = []
    for conv in read_canonical(p.chat, to_chat)[: p.samples]:
        messages = conv["messages"]
        prompts.append(messages[: next(i for i, m in enumerate(messages) if m["role"] == "assistant")])
    return prompts


class HFVariant:
    """A transformers model: lm-eval's HF model for scoring, greedy `generate` for samples."""

    def __init__(self, path: str, mp, bits: int | None, batch_size: int):
        from lm_eval.models.huggingface import HFLM
        self.tokenizer = load_tokenizer(path, mp)
        self.model = load_model(path, mp, bits=bits).eval()
        self.precision = {4: "4-bit NF4 (bitsandbytes)", 8: "int8 (bitsandbytes)"}.get(bits) or str(
            self.model.dtype).split(".")[-1]
        self.files = [f for f in Path(path).iterdir() if f.suffix in (".safetensors", ".bin")]
        self.lm = HFLM(pretrained=self.model, tokenizer=self.tokenizer, batch_size=batch_size,
                       device="cuda" if torch.cuda.is_available() else "cpu")

    def memory_bytes(self) -> int:
        return self.model.get_memory_footprint()  # bitsandbytes variants: their quantized weights

    def generate(self, prompts: list[list[dict]], max_new_tokens: int, tools=None,
                 batch_size: int = 1) -> tuple[list[str], int]:
        replies = generate_replies(self.model, self.tokenizer, prompts, max_new_tokens, batch_size, tools)
        return replies, sum(len(self.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in replies)


class GGUFVariant:
    """A GGUF file: llama.cpp scores and generates; its directory holds the source model's tokenizer."""

    def __init__(self, path: str):
        from eval.llama_cpp_lm import LlamaCppLM
        self.tokenizer = load_tokenizer(Path(path).parent / "tokenizer", model_params())
        self.lm = LlamaCppLM(path)
        self.files = [Path(path)]
        self.precision = "llama.cpp " + Path(path).stem.removeprefix("model-")

    def memory_bytes(self) -> int:
        return self.files[0].stat().st_size  # llama.cpp maps the file

    def generate(self, prompts: list[list[dict]], max_new_tokens: int, tools=None,
                 batch_size: int = 1) -> tuple[list[str], int]:
        replies, tokens = [], 0
        for messages, offered in zip(prompts, tools or [None] * len(prompts)):
            out = self.lm.llm(render(self.tokenizer, messages, offered), max_tokens=max_new_tokens, temperature=0.0)
            replies.append(out["choices"][0]["text"].strip())
            tokens += out["usage"]["completion_tokens"]
        return replies, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", type=int, choices=[4, 8], help="load the HF model in 4-bit NF4 or 8-bit (bnb)")
    args = stage_paths("model", "metrics", "samples", parser=parser)  # model: an HF directory or a .gguf file
    p = params.load("eval")
    start = time.perf_counter()
    if args.model.suffix == ".gguf":
        variant = GGUFVariant(args.model)
    else:
        variant = HFVariant(args.model, model_params(), args.bits, p.batch_size)
    load_seconds = time.perf_counter() - start
    scores = lm_eval_scores(variant.lm, variant.tokenizer, p)
    if p.tools:
        scores.update(tool_call_scores(variant, p))
    prompts = sample_prompts(p)
    start = time.perf_counter()
    replies, tokens = variant.generate(prompts, p.max_new_tokens)
    generation_seconds = time.perf_counter() - start
    write_json(args.samples,
               [{"prompt": h[-1]["content"], "reply": r} for h, r in zip(prompts, replies)])
    provenance.write_metrics(args.metrics,
                             {**scores, "load_seconds": round(load_seconds, 2),
                              "size_mb": round(sum(f.stat().st_size for f in variant.files) / 2**20, 2),
                              "memory_mb": round(variant.memory_bytes() / 2**20, 2),
                              "generation_tokens_per_s": round(tokens / generation_seconds, 1)},
                             precision=variant.precision)
    print(json.dumps(scores))


if __name__ == "__main__":
    main()
