"""`make serve`: an OpenAI-compatible API over the pipeline's model, and a chat page.

    python -m serve [--model models/gguf/model-q4_k_m.gguf] [--host 127.0.0.1] [--port 8000]

A .gguf file runs on llama.cpp; an HF model directory on vLLM where it is installed and a GPU is present (its own
server, `vllm serve`), otherwise on transformers. Endpoints: GET /health, GET /v1/models, POST /v1/chat/completions
(streaming or not; POST /v1/completions too on llama.cpp), GET / (chat page); docs/serving.md lists the parameters.
Settings come from params.yaml `serve`; flags override them.
Bound to anything but loopback, the server refuses to start without an API key (--api-key or MEDFORGE_API_KEY).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import socket
import sys
import typing
from dataclasses import dataclass
from pathlib import Path

from medforge import params


@dataclass
class Settings:
    model: str
    host: str
    port: int
    model_id: str  # the name clients pass as "model"
    system_prompt: str  # added to conversations that bring no system message; "" for none
    n_ctx: int  # llama.cpp context; 0: the model's own
    threads: int  # llama.cpp threads; 0: half the cores, the rest serve HTTP (README)
    max_body_bytes: int


def loopback(host: str) -> bool:
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
    except (socket.gaierror, ValueError):
        return False


def build_app(s: Settings, api_key: str | None):
    """The ASGI app for `s.model`: the engine's app behind serve.guard.Guard, with /health and the chat page."""
    from fastapi.responses import HTMLResponse

    from serve.api import openai_app
    from serve.backends import LlamaCpp, Transformers
    from serve.guard import Guard

    path = Path(s.model)
    if not path.exists():
        raise SystemExit(f"serve.model: {path} does not exist (run `make quantize` for the GGUF, or pass MODEL=...)")
    if path.suffix == ".gguf":
        engine = LlamaCpp(path, s.model_id, s.n_ctx, s.threads or max(1, (os.cpu_count() or 2) // 2))
    elif (path / "config.json").exists():
        engine = Transformers(path, s.model_id)
    else:
        raise SystemExit(f"serve.model: {path} is neither a .gguf file nor an HF model directory")
    app = openai_app(engine, s.model_id)
    page = Path(__file__).with_name("chat.html").read_text(encoding="utf-8").replace("{{model_id}}", s.model_id)
    app.add_api_route("/health", lambda: {"status": "ok", "model": s.model_id}, methods=["GET"])
    app.add_api_route("/", lambda: HTMLResponse(page), methods=["GET"], include_in_schema=False)
    return Guard(app, engine, s.model_id, api_key, s.system_prompt, s.max_body_bytes)


def exec_vllm(s: Settings, api_key: str | None) -> None:
    """vLLM's own OpenAI server on the same host/port/key (its /health and /v1/ routes); no chat page."""
    args = ["vllm", "serve", s.model, "--host", s.host, "--port", str(s.port), "--served-model-name", s.model_id]
    os.execvp("vllm", args + (["--api-key", api_key] if api_key else []))


def has_cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(Settings)
    for name in ("model", "host", "port", "model_id", "system_prompt", "n_ctx", "threads"):
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=hints[name])
    parser.add_argument("--api-key", default=os.environ.get("MEDFORGE_API_KEY") or None)
    args = vars(parser.parse_args(argv))
    api_key = args.pop("api_key")
    s = params.load("serve", **{k: v for k, v in args.items() if v is not None})
    if not loopback(s.host) and not api_key:
        raise SystemExit(f"serve: refusing to listen on {s.host} without an API key: set MEDFORGE_API_KEY "
                         f"(or --api-key), or bind to 127.0.0.1")
    if Path(s.model).is_dir() and shutil.which("vllm") and has_cuda():
        exec_vllm(s, api_key)
    import uvicorn
    app = build_app(s, api_key)
    print(f"serving {s.model} as {s.model_id!r} on http://{s.host}:{s.port} "
          f"({'API key required' if api_key else 'no API key'})", file=sys.stderr)
    uvicorn.run(app, host=s.host, port=s.port, log_level="warning")


if __name__ == "__main__":
    main()
