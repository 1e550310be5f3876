"""`make bench-generate`: greedy generation speed on this machine's CPU, side by side in one command: llama.cpp
on a GGUF file against transformers `generate` in fp32 on the merged model it was converted from.

Both get the same chat prompts (eval's held-out conversations) and must produce exactly `--tokens` new tokens
(end-of-turn ignored), one prompt at a time, prompt processing included; the first prompt of each is a warm-up.
Writes reports/generation_bench.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date

import torch

from eval.run import sample_prompts
from eval.tasks import render
from medforge import params
from medforge.io import write_json
from medforge.modeling import load_model, load_tokenizer, model_params


def transformers_rate(model_dir: str, texts: list[str], tokens: int) -> float:
    tokenizer = load_tokenizer(model_dir, model_params())
    model = load_model(model_dir, params.load("model", dtype="float32")).eval()
    seconds = 0.0
    for i, text in enumerate(texts):
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        assert out.shape[1] - ids["input_ids"].shape[1] == tokens
        seconds += (time.perf_counter() - start) if i else 0.0
    return tokens * (len(texts) - 1) / seconds


def llama_cpp_rate(gguf: str, texts: list[str], tokens: int) -> float:
    from llama_cpp import Llama
    llm = Llama(model_path=gguf, n_ctx=1024, verbose=False, n_threads=os.cpu_count())
    seconds = 0.0
    for i, text in enumerate(texts):
        prompt = llm.tokenize(text.encode(), add_bos=False, special=True)
        start = time.perf_counter()
        for n, _ in enumerate(llm.generate(prompt, temp=0.0), 1):  # greedy; does not stop at end-of-turn
            if n == tokens:
                break
        seconds += (time.perf_counter() - start) if i else 0.0
    return tokens * (len(texts) - 1) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    align = params.load("pipeline").align
    parser.add_argument("--model", default=f"models/merged/{align}", help="merged HF model directory")
    parser.add_argument("--gguf", default="models/gguf/model-q4_k_m.gguf")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=9)
    cli = parser.parse_args()
    tokenizer = load_tokenizer(cli.model, model_params())
    texts = [render(tokenizer, m) for m in sample_prompts(params.load("eval", samples=cli.prompts))]
    hf = transformers_rate(cli.model, texts, cli.tokens)
    gguf = llama_cpp_rate(cli.gguf, texts, cli.tokens)
    report = {"date": date.today().isoformat(), "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores", "model": cli.model, "gguf": cli.gguf, "new_tokens": cli.tokens,
              "prompts_timed": len(texts) - 1, "transformers_fp32_tokens_per_s": round(hf, 1),
              "llama_cpp_tokens_per_s": round(gguf, 1), "speedup": round(gguf / hf, 2)}
    write_json("reports/generation_bench.json", report)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
