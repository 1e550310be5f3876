"""OpenAI's HTTP API over one engine (serve.backends), the same for both: GET /v1/models and each route in the
engine's FIELDS, streamed as server-sent events when asked. One generation runs at a time, in arrival order, in a
worker thread that holds the engine; a client that goes away mid-stream stops its generation at the next chunk.

With `tools`, the engine renders them with the model's template and the calls in the reply come back as OpenAI's
`tool_calls` (finish_reason "tool_calls"); streamed, the whole reply is generated first and sent as one delta.
`tool_choice: "none"` leaves the tools out.

No `from __future__ import annotations` here: FastAPI must see `Request` in the route's signature.
"""
import json
import queue
import threading

from medforge import tools

END = object()


def calls_tools(request: dict) -> bool:
    """Whether the request offers tools; drops them (and tool_choice) when tool_choice is "none"."""
    if request.pop("tool_choice", None) == "none":
        request.pop("tools", None)
    return bool(request.get("tools"))


def with_tool_calls(reply: dict) -> dict:
    """A chat completion whose text calls tools as OpenAI returns it: `tool_calls`, the rest as content (null when
    there is none), finish_reason "tool_calls"."""
    choice = reply["choices"][0]
    text, calls = tools.parse(choice["message"]["content"] or "")
    if calls:
        choice["message"] = {"role": "assistant", "content": text or None, "tool_calls": tools.openai_calls(calls)}
        choice["finish_reason"] = "tool_calls"
    return reply


def as_chunks(reply: dict):
    """A whole chat completion as stream chunks: one delta, the finish, the usage."""
    choice, head = reply["choices"][0], {k: reply[k] for k in ("id", "created", "model")}
    message = choice["message"]
    delta = {"role": "assistant", "content": message["content"]}
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    for choices in ([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
                    [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": choice["finish_reason"]}]):
        yield {**head, "object": "chat.completion.chunk", "choices": choices}
    yield {**head, "object": "chat.completion.chunk", "choices": [], "usage": reply["usage"]}


def openai_app(engine, model_id: str):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from sse_starlette.sse import EventSourceResponse
    from starlette.concurrency import run_in_threadpool

    from serve.backends import ClientError
    from serve.guard import error_body

    app = FastAPI(title=f"medforge ({engine.name})")
    engine_lock = threading.Lock()

    def complete(path: str, request: dict):
        with engine_lock:
            if calls_tools(request):
                return with_tool_calls(engine.complete(path, request))
            return engine.complete(path, request)

    def stream(path: str, request: dict, chunks: queue.Queue, cancelled: threading.Event) -> None:
        """Put the engine's chunks on `chunks`, then END; an exception in place of the rest."""
        with engine_lock:
            if calls_tools(request):
                iterator = as_chunks(with_tool_calls(engine.complete(path, {**request, "stream": False})))
            else:
                iterator = engine.stream(path, request)
            try:
                for chunk in iterator:
                    chunks.put(chunk)
                    if cancelled.is_set():
                        break
            except Exception as e:  # noqa: BLE001 (handed to the request)
                chunks.put(e)
            finally:
                iterator.close()
                chunks.put(END)

    def route(path: str):
        async def create(request: Request):
            body = await request.json()  # serve.guard has checked it
            try:
                if not body.get("stream"):
                    return await run_in_threadpool(complete, path, body)
                chunks, cancelled = queue.Queue(), threading.Event()
                threading.Thread(target=stream, args=(path, body, chunks, cancelled), daemon=True).start()
                first = await run_in_threadpool(chunks.get)
                if isinstance(first, Exception):
                    raise first
            except ClientError as e:
                return JSONResponse(error_body(e.message, param=e.param), status_code=e.status)
            usage = (body.get("stream_options") or {}).get("include_usage", False)

            async def events():
                try:
                    chunk = first
                    while chunk is not END:
                        if isinstance(chunk, Exception):
                            raise chunk
                        if chunk["choices"] or usage:  # the engine's last chunk is the usage
                            yield json.dumps(chunk)
                        chunk = await run_in_threadpool(chunks.get)
                    yield "[DONE]"
                finally:
                    cancelled.set()
            return EventSourceResponse(events(), sep="\n")
        return create

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "owned_by": "medforge"}]}

    for path in engine.FIELDS:
        app.add_api_route(path, route(path), methods=["POST"])
    return app
