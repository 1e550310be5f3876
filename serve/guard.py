"""What every request to /v1/ passes before a backend sees it, the same for llama.cpp and transformers: the API key,
a route the engine serves, a body that is JSON and not too large, a model id this server serves, only fields the engine
honours (serve.backends FIELDS) in range, OpenAI's current names mapped onto the engine's, and the default system
prompt. Whatever fails gets an OpenAI-style 4xx naming the field."""
from __future__ import annotations

import hmac
import json

# Values the engines would take out of range (llama.cpp reads max_tokens <= 0 as "no limit"), OpenAI's ranges:
# name -> (lowest, highest, integers only)
RANGES = {"max_tokens": (1, None, True), "max_completion_tokens": (1, None, True), "n": (1, 128, True),
          "temperature": (0.0, 2.0, False), "top_p": (0.0, 1.0, False), "presence_penalty": (-2.0, 2.0, False),
          "frequency_penalty": (-2.0, 2.0, False), "top_logprobs": (0, 20, True), "seed": (None, None, True)}
EMBEDDINGS = ("this server does not serve embeddings: a chat model's mean-pooled hidden states make poor retrieval "
              "vectors; run an embedding model (bge-m3, for one) beside it")


def out_of_range(request: dict) -> tuple[str, str] | None:
    for name, (low, high, integer) in RANGES.items():
        value = request.get(name)
        if value is None:
            continue
        kind = int if integer else (int, float)
        if (isinstance(value, bool) or not isinstance(value, kind) or (low is not None and value < low)
                or (high is not None and value > high)):
            span = "" if low is None else f" >= {low}" if high is None else f" in [{low}, {high}]"
            return name, f"{name}: expected {'an integer' if integer else 'a number'}{span}, got {json.dumps(value)}"
    return None


def unknown_field(request: dict, fields: set[str]) -> tuple[str, str] | None:
    """(field, message) for the first field the engine does not honour: 400, never silence."""
    return next(((name, f"{name}: not supported by this server") for name in request if name not in fields), None)


def unsupported(request: dict) -> tuple[str, str] | None:
    """(field, message) for a value of a known field that neither engine serves."""
    if request.get("n", 1) != 1:
        return "n", f"n: this server returns one choice per request (got {request['n']}); send {request['n']} requests"
    options = request.get("stream_options")
    if options is not None:
        if not request.get("stream"):
            return "stream_options", "stream_options: only allowed when stream is true"
        if not isinstance(options, dict) or set(options) - {"include_usage"} or not isinstance(
                options.get("include_usage", False), bool):
            return "stream_options", 'stream_options: expected {"include_usage": true|false}'
    if request.get("top_logprobs") is not None and not request.get("logprobs"):
        return "top_logprobs", "top_logprobs: requires logprobs: true"
    if request.get("stream") and request.get("logprobs") is True:
        return "logprobs", "logprobs: returned only when not streaming"
    if request.get("tool_choice", "auto") not in ("auto", "none"):
        return "tool_choice", ('tool_choice: "auto" or "none"; this server does not force a call (send the tools '
                               'and let the model choose)')
    return None


def normalise(request: dict) -> None:
    """OpenAI's current names onto the engines': max_completion_tokens wins over the deprecated max_tokens (as in
    vLLM), response_format json_schema becomes llama.cpp's json_object with that schema, and a tool-calling turn's
    null content the empty string llama-cpp-python's request models take."""
    if request.get("max_completion_tokens") is not None:
        request["max_tokens"] = request["max_completion_tokens"]
    request.pop("max_completion_tokens", None)
    form = request.get("response_format")
    if isinstance(form, dict) and form.get("type") == "json_schema":
        request["response_format"] = {"type": "json_object", "schema": (form.get("json_schema") or {}).get("schema")}
    for message in request.get("messages") or []:  # a tool-calling turn's content is null in OpenAI's API
        if isinstance(message, dict) and message.get("tool_calls") and message.get("content") is None:
            message["content"] = ""


def invalid(path: str, request: dict) -> str | None:
    """Schema errors of a chat or text completion request, checked with llama-cpp-python's own request models
    (its server would answer them with a 500)."""
    from llama_cpp.server.types import CreateChatCompletionRequest, CreateCompletionRequest
    from pydantic import ValidationError
    schema = {"/v1/chat/completions": CreateChatCompletionRequest, "/v1/completions": CreateCompletionRequest}[path]
    try:
        schema.model_validate(request)
    except ValidationError as e:
        return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors()[:3])
    return None


def error_body(message: str, code: str | None = None, param: str | None = None) -> dict:
    """An OpenAI-style error: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


async def reply(send, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
    body = json.dumps(error_body(message, code, param))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})


class Guard:
    def __init__(self, app, engine, model_id: str, api_key: str | None, system_prompt: str, max_body_bytes: int):
        self.app, self.engine, self.model_id, self.api_key = app, engine, model_id, api_key
        self.system_prompt, self.max_body_bytes = system_prompt, max_body_bytes

    def authorized(self, scope) -> bool:
        if not self.api_key:
            return True
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        return hmac.compare_digest(header.encode(), f"Bearer {self.api_key}".encode())

    def route_problem(self, scope) -> tuple[int, str, str] | None:
        path, method = scope["path"], scope["method"]
        if path == "/v1/models":
            return None if method == "GET" else (405, f"{method} {path}: use GET", "method_not_allowed")
        if path in self.engine.FIELDS:
            return None if method == "POST" else (405, f"{method} {path}: use POST", "method_not_allowed")
        if path == "/v1/embeddings":
            return 404, EMBEDDINGS, "unknown_url"
        served = ", ".join(["/v1/models", *self.engine.FIELDS])
        return 404, f"{path}: not served by this server ({self.engine.name}: {served})", "unknown_url"

    def problem(self, path: str, request) -> tuple[int, str, str | None, str | None] | None:
        """(status, message, code, param) of what is wrong with the request; None when it is fine. `request` is
        normalised for the engine on the way (serve.guard.normalise)."""
        if not isinstance(request, dict):
            return 400, "request body must be a JSON object", None, None
        model = request.get("model")
        if model is not None and model != self.model_id:
            return 404, f"model {model!r} not found; this server serves {self.model_id!r}", "model_not_found", "model"
        if found := unknown_field(request, self.engine.FIELDS[path]):
            return 400, found[1], "unsupported_parameter", found[0]
        if found := out_of_range(request):
            return 400, found[1], "invalid_value", found[0]
        if found := unsupported(request) or self.engine.unsupported(request):
            return 400, found[1], "unsupported_parameter", found[0]
        normalise(request)
        if message := invalid(path, request):
            return 400, message, "invalid_value", None
        return None

    def add_system_prompt(self, request: dict) -> None:
        messages = request.get("messages")  # a list of dicts once validated; absent from text completions
        if self.system_prompt and messages is not None and not any(m.get("role") == "system" for m in messages):
            request["messages"] = [{"role": "system", "content": self.system_prompt}, *messages]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        if not self.authorized(scope):
            return await reply(send, 401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                code="invalid_api_key")
        if problem := self.route_problem(scope):
            return await reply(send, *problem)
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return await reply(send, 413, f"request body over {self.max_body_bytes} bytes")
            if not message.get("more_body"):
                break
        try:
            request = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return await reply(send, 400, f"request body is not valid JSON: {e}")
        if problem := self.problem(scope["path"], request):
            return await reply(send, *problem)
        self.add_system_prompt(request)
        body = json.dumps(request).encode()
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-length", b"content-type")]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode()),
                                      (b"content-type", b"application/json")]}
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()  # after the body: disconnect notices
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
