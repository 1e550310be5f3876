"""Stage `eval@NAME`: score one model with lm-eval-harness on the held-out sets, plus sample generations.

    python -m eval.run NAME MODEL_DIR     -> metrics/eval/NAME.json, samples/NAME.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from eval.tasks import write_tasks
from medforge import params
from medforge.formats import read_canonical, to_chat
from medforge.io import write_json
from medforge.modeling import generate_replies, load_model, load_tokenizer, model_params


@dataclass
class Params:
    mcq: str = "data/generated/mcq_eval.jsonl"
    chat: str = "data/prepared/sft_validation.jsonl"
    preference: str | None = "data/generated/preference_eval.jsonl"
    extra_tasks: list[str] = field(default_factory=list)
    num_fewshot: int = 0
    batch_size: int = 16
    samples: int = 6
    max_new_tokens: int = 64


def lm_eval_scores(model, tokenizer, p: Params) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    with tempfile.TemporaryDirectory(prefix="medforge-tasks-") as tmp:
        names = write_tasks(Path(tmp), tokenizer, p.mcq, p.chat, p.preference)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=p.batch_size,
                  device="cuda" if torch.cuda.is_available() else "cpu")
        out = lm_eval.simple_evaluate(model=lm, tasks=names + p.extra_tasks, num_fewshot=p.num_fewshot,
                                      task_manager=TaskManager(include_path=tmp), log_samples=False,
                                      bootstrap_iters=0)
    results = out["results"]
    scores = {
        "mcq_acc": results["medforge_mcq"]["acc,none"],
        "mcq_acc_norm": results["medforge_mcq"]["acc_norm,none"],
        "answer_ppl": results["medforge_answer_ppl"]["answer_ppl,none"],
    }
    if "medforge_preference" in results:
        scores["preference_acc"] = results["medforge_preference"]["acc,none"]
    for task in p.extra_tasks:
        scores.update({f"{task}/{k.split(',')[0]}": v for k, v in results.get(task, {}).items()
                       if isinstance(v, (int, float)) and "stderr" not in k})
    return scores


def sample_generations(model, tokenizer, p: Params) -> list[dict]:
    prompts = []
    for conv in read_canonical(p.chat, to_chat)[: p.samples]:
        messages = conv["messages"]
        prompts.append(messages[: next(i for i, m in enumerate(messages) if m["role"] == "assistant")])
    replies = generate_replies(model, tokenizer, prompts, p.max_new_tokens)
    return [{"prompt": h[-1]["content"], "reply": r} for h, r in zip(prompts, replies)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name")
    parser.add_argument("model")
    args = parser.parse_args()
    p = params.load("eval", Params)
    mp = model_params()
    tokenizer = load_tokenizer(args.model, mp)
    start = time.perf_counter()
    model = load_model(args.model, mp).eval()
    load_seconds = time.perf_counter() - start
    scores = lm_eval_scores(model, tokenizer, p)
    samples = sample_generations(model, tokenizer, p)
    write_json(Path("samples") / f"{args.name}.json", samples)
    write_json(Path("metrics/eval") / f"{args.name}.json", {**scores, "load_seconds": round(load_seconds, 2)})
    print(json.dumps(scores))


if __name__ == "__main__":
    main()
