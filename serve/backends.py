"""The two engines behind the API. A GGUF runs in llama.cpp's own OpenAI-compatible server app (llama-cpp-python
[server]); an HF model directory runs in a small transformers app speaking the same protocol, validated by the same
request model. Each app answers one generation at a time, in arrival order.

No `from __future__ import annotations` here: FastAPI must see the request model's class in the route's signature.
"""
import json
import threading
import time
import uuid
from pathlib import Path


def llama_cpp_app(path: Path, model_id: str, n_ctx: int, n_threads: int):
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings
    # interrupt_requests=False: a waiting request must not cut off the one streaming now
    return create_app(server_settings=ServerSettings(interrupt_requests=False),
                      model_settings=[ModelSettings(model=str(path), model_alias=model_id, n_ctx=n_ctx,
                                                    n_threads=n_threads, n_threads_batch=n_threads, verbose=False)])


def error(status: int, message: str):
    from fastapi.responses import JSONResponse
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                   "code": None}}, status_code=status)


def transformers_app(path: Path, model_id: str):
    import torch
    from fastapi import FastAPI
    from llama_cpp.server.types import CreateChatCompletionRequest
    from sse_starlette.sse import EventSourceResponse
    from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
    from transformers import TextIteratorStreamer

    from medforge.modeling import load_model, load_tokenizer, model_params

    mp = model_params()
    tokenizer, model = load_tokenizer(path, mp), load_model(path, mp).eval()
    context = model.config.max_position_embeddings
    end_ids = model.generation_config.eos_token_id
    end_ids = set(end_ids if isinstance(end_ids, list) else [end_ids])
    lock = threading.Lock()
    app = FastAPI(title="medforge (transformers)")

    def generate_kwargs(body, prompt):
        max_tokens = body.max_tokens or context - prompt.shape[1]
        sample = body.temperature > 0
        return dict(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_tokens,
                    do_sample=sample, temperature=body.temperature if sample else None,
                    top_p=body.top_p if sample else None, top_k=None, pad_token_id=tokenizer.pad_token_id,
                    stop_strings=[body.stop] if isinstance(body.stop, str) else body.stop, tokenizer=tokenizer)

    def chunk(cid, delta, finish=None):
        return json.dumps({"id": cid, "object": "chat.completion.chunk", "created": int(time.time()),
                           "model": model_id, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "owned_by": "medforge"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: CreateChatCompletionRequest):
        prompt = tokenizer.apply_chat_template(body.messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)["input_ids"].to(model.device)
        if prompt.shape[1] + (body.max_tokens or 1) > context:
            return error(400, f"This model's maximum context length is {context} tokens. However, you requested "
                              f"{prompt.shape[1] + (body.max_tokens or 1)} tokens ({prompt.shape[1]} in the "
                              f"messages, {body.max_tokens} in the completion).")
        kwargs, cid = generate_kwargs(body, prompt), f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

            def run():
                with lock:
                    model.generate(**kwargs, streamer=streamer)

            threading.Thread(target=run, daemon=True).start()

            async def events():
                yield chunk(cid, {"role": "assistant"})
                async for text in iterate_in_threadpool(streamer):
                    if text:
                        yield chunk(cid, {"content": text})
                yield chunk(cid, {}, "stop")
                yield "[DONE]"

            return EventSourceResponse(events(), sep="\n")

        def run():
            with lock, torch.no_grad():
                return model.generate(**kwargs)[0, prompt.shape[1]:]

        new = await run_in_threadpool(run)
        ended = new.shape[0] > 0 and new[-1].item() in end_ids
        new = new[:-1] if ended else new  # llama.cpp neither returns nor counts the end-of-turn token
        finished = ended or new.shape[0] < kwargs["max_new_tokens"]
        return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": model_id,
                "choices": [{"index": 0, "message": {"role": "assistant",
                                                     "content": tokenizer.decode(new, skip_special_tokens=True)},
                             "finish_reason": "stop" if finished else "length"}],
                "usage": {"prompt_tokens": prompt.shape[1], "completion_tokens": new.shape[0],
                          "total_tokens": prompt.shape[1] + new.shape[0]}}

    return app
