"""`make bench-serve`: a bounded load test of the API on this CPU, loopback only, side by side in one command:
`make serve`'s llama.cpp server on the q4_k_m GGUF against the naive approach of the reference project, a server
calling transformers `generate` in fp32 per request on the merged model the GGUF was made from (`python -m serve`
on the model directory: same API, same guard, same system prompt).

Each server in turn gets `--clients` concurrent clients (the official `openai` SDK, one client each) for `--seconds`,
each sending the held-out chat questions in a loop (greedy, at most `--max-tokens` new tokens). Reports errors,
requests/s, p50/p99 latency and completion tokens/s; writes reports/serving_bench.json.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, suppress
from datetime import date

import openai
import requests

from medforge import params
from medforge.io import write_json
from medforge.provenance import device


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def answering(command: list[str], url: str, timeout: float = 120, **popen):
    """Run `command` (a server, in a process group of its own) and yield once `url`/health answers. Its output goes
    to a file, not a pipe nobody reads while it serves (a full pipe would block the server)."""
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True, **popen)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{' '.join(command)} exited: {log.read()}")
            try:
                if requests.get(f"{url}/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{' '.join(command)} did not answer {url}/health in {timeout:.0f} s")
                time.sleep(0.2)
        yield url
    finally:
        with suppress(ProcessLookupError):  # it exited already
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


@contextmanager
def running(model: str, *flags: str, timeout: float = 120):
    """`python -m serve` on `model` on a free loopback port; yields its base URL once /health answers."""
    port = free_port()
    with answering([sys.executable, "-m", "serve", "--model", str(model), "--port", str(port), *flags],
                   f"http://127.0.0.1:{port}", timeout) as url:
        yield url


def load(url: str, questions: list[str], clients: int, seconds: float, max_tokens: int) -> dict:
    latencies, tokens, errors = [], [], []
    lock, start = threading.Lock(), time.perf_counter()
    deadline = start + seconds

    def client(offset: int):
        sdk, i = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600), offset
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            try:
                reply = sdk.chat.completions.create(
                    model="medforge", messages=[{"role": "user", "content": questions[i % len(questions)]}],
                    max_completion_tokens=max_tokens, temperature=0)
                ok, used = True, reply.usage.completion_tokens
            except openai.APIError as e:
                ok, used = False, 0
                print(f"error: {e}", file=sys.stderr)
            with lock:
                (latencies if ok else errors).append(time.perf_counter() - sent)
                tokens.append(used)
            i += clients

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ordered = sorted(latencies) or [float("nan")]
    return {"requests": len(latencies), "errors": len(errors), "seconds": round(elapsed, 1),
            "requests_per_s": round(len(latencies) / elapsed, 3),
            "p50_s": round(ordered[len(ordered) // 2], 3), "p99_s": round(ordered[int(0.99 * (len(ordered) - 1))], 3),
            "completion_tokens_per_s": round(sum(tokens) / elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    align = params.load("pipeline").align
    parser.add_argument("--gguf", default="models/gguf/model-q4_k_m.gguf")
    parser.add_argument("--model", default=f"models/merged/{align}", help="merged HF model (the naive server)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    from eval.run import sample_prompts
    questions = [messages[-1]["content"] for messages in sample_prompts(params.load("eval", samples=64))]
    results = {}
    for name, model in (("llama.cpp q4_k_m", args.gguf), ("transformers fp32 (naive)", args.model)):
        with running(model) as url:
            results[name] = {"model": model, **load(url, questions, args.clients, args.seconds, args.max_tokens)}
        print(name, results[name], flush=True)
    fast, naive = results.values()
    report = {"date": str(date.today()), "machine": device(),
              "clients": args.clients, "seconds": args.seconds, "max_tokens": args.max_tokens, "results": results,
              "requests_per_s_ratio": round(fast["requests_per_s"] / naive["requests_per_s"], 2),
              "tokens_per_s_ratio": round(fast["completion_tokens_per_s"] / naive["completion_tokens_per_s"], 2)}
    write_json("reports/serving_bench.json", report)
    print("| server | requests | errors | req/s | p50 s | p99 s | tokens/s |\n|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['requests']} | {r['errors']} | {r['requests_per_s']} | {r['p50_s']} | {r['p99_s']} | "
              f"{r['completion_tokens_per_s']} |")
    print(f"llama.cpp / naive: {report['requests_per_s_ratio']}x requests/s, {report['tokens_per_s_ratio']}x tokens/s")


if __name__ == "__main__":
    main()
