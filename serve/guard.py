"""What every request to /v1/ passes before a backend sees it, the same for llama.cpp and transformers: the API key,
a body that is JSON and not too large, a model id this server serves, and the default system prompt."""
from __future__ import annotations

import hmac
import json

# Sampling parameters the backends would accept out of range (llama.cpp reads max_tokens <= 0 as "no limit"):
# name -> (lowest, highest, integers only)
RANGES = {"max_tokens": (1, None, True), "temperature": (0.0, 2.0, False), "top_p": (0.0, 1.0, False)}


def out_of_range(request: dict) -> str | None:
    for name, (low, high, integer) in RANGES.items():
        value = request.get(name)
        if value is None:
            continue
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind) or value < low or (high is not None and value > high):
            span = f">= {low}" if high is None else f"in [{low}, {high}]"
            return f"{name}: expected {'an integer' if integer else 'a number'} {span}, got {json.dumps(value)}"
    return None


def invalid(path: str, request: dict) -> str | None:
    """Schema errors of a chat or text completion request, checked with llama-cpp-python's own request models
    (its server would answer them with a 500)."""
    from llama_cpp.server.types import CreateChatCompletionRequest, CreateCompletionRequest
    from pydantic import ValidationError
    schema = {"/v1/chat/completions": CreateChatCompletionRequest, "/v1/completions": CreateCompletionRequest}.get(path)
    try:
        if schema:
            schema.model_validate(request)
    except ValidationError as e:
        return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'body'}: {err['msg']}" for err in e.errors()[:3])
    return None


async def reply(send, status: int, message: str, code: str | None = None) -> None:
    """An OpenAI-style error: {"error": {"message", "type", "param", "code"}}."""
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})


class Guard:
    def __init__(self, app, model_id: str, api_key: str | None, system_prompt: str, max_body_bytes: int):
        self.app, self.model_id, self.api_key = app, model_id, api_key
        self.system_prompt, self.max_body_bytes = system_prompt, max_body_bytes

    def authorized(self, scope) -> bool:
        if not self.api_key:
            return True
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        return hmac.compare_digest(header.encode(), f"Bearer {self.api_key}".encode())

    def problem(self, path: str, request) -> tuple[int, str, str | None] | None:
        if not isinstance(request, dict):
            return 400, "request body must be a JSON object", None
        model = request.get("model")
        if model is not None and model != self.model_id:
            return 404, f"model {model!r} not found; this server serves {self.model_id!r}", "model_not_found"
        if message := out_of_range(request) or invalid(path, request):
            return 400, message, "invalid_value"
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
