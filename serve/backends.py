"""The two engines behind the API (serve.api): a GGUF on llama.cpp (llama-cpp-python), an HF model directory on
transformers. Each takes a request serve.guard has checked and normalised (only fields in its `FIELDS`, max_tokens
for max_completion_tokens, OpenAI's json_schema as llama.cpp's json_object + schema) and answers with OpenAI's
objects: `complete` a whole completion, `stream` its chunks and, last, a usage chunk (choices []).
Both read their defaults from llama-cpp-python's request models, so one request samples alike on either engine.
"""
from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from medforge.tools import for_template

# Request fields each engine honours, per route; serve.guard answers 400 naming any other. `user` (an end-user id
# for abuse monitoring in OpenAI's API) changes no output and is accepted.
SAMPLING = {"model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "repeat_penalty", "n", "stream",
            "stream_options", "stop", "seed", "presence_penalty", "frequency_penalty", "user"}
CHAT = SAMPLING | {"messages", "max_completion_tokens", "logprobs", "top_logprobs", "tools", "tool_choice"}
# what llama-cpp-python's create_chat_completion and create_completion take of those
LLAMA_ARGUMENTS = {"max_tokens", "temperature", "top_p", "top_k", "min_p", "repeat_penalty", "stop", "seed",
                   "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "response_format",
                   "logit_bias", "suffix", "echo", "tools"}


class ClientError(Exception):
    """A request the engine cannot answer, for a reason of the client's: a 4xx, not a 500."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def context_error(context: int, prompt: int, completion: int | None) -> ClientError:
    return ClientError(400, f"This model's maximum context length is {context} tokens. However, you requested "
                            f"{prompt + (completion or 1)} tokens ({prompt} in the messages, {completion} in the "
                            f"completion).", "messages")


def log_softmax(logits):
    import numpy as np
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def logprobs_content(steps: list, tokens: list[int], top: int, decode) -> dict:
    """OpenAI's `logprobs`: each generated token's log-probability under the model (its raw logits, before
    temperature, penalties and truncation) and its `top` most likely alternatives; `steps` holds the log-softmax
    of each step's logits, `decode` turns a token id into its text."""
    def entry(row, token: int) -> dict:
        text = decode(token)
        return {"token": text, "logprob": float(row[token]), "bytes": list(text.encode())}
    return {"content": [{**entry(row, token), "top_logprobs": [entry(row, int(t)) for t in (-row).argsort()[:top]]}
                        for row, token in zip(steps, tokens)]}


def stops(body) -> list[str]:
    return [body.stop] if isinstance(body.stop, str) else body.stop or []


def chat_request(request: dict):
    from llama_cpp.server.types import CreateChatCompletionRequest
    return CreateChatCompletionRequest.model_validate(request)


class LlamaCpp:
    name = "llama.cpp"
    FIELDS = {"/v1/chat/completions": CHAT | {"response_format", "logit_bias"},
              "/v1/completions": SAMPLING | {"prompt", "suffix", "echo", "logit_bias"}}

    @staticmethod
    def unsupported(request: dict) -> tuple[str, str] | None:
        return None  # llama.cpp does everything its FIELDS name

    def __init__(self, path: Path, model_id: str, n_ctx: int, n_threads: int):
        from llama_cpp import Llama
        self.model_id = model_id
        self.llama = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                           verbose=False)
        self.usage, self.generated = {}, []  # of the last generation (one runs at a time: serve.api)
        self.llama.generate = self.counting(self.llama.generate)

    def counting(self, generate):
        """llama.cpp's token loop, counting as its non-streaming usage does (the prompt, the tokens generated
        but the end-of-generation one; streamed chunks carry no counts), and ending at a full context."""
        import llama_cpp

        def counted(tokens, *args, **kwargs):
            self.usage, self.generated = {"prompt_tokens": len(tokens), "completion_tokens": 0}, []
            for token in generate(tokens, *args, **kwargs):
                if not llama_cpp.llama_vocab_is_eog(self.llama._model.vocab, token):
                    self.usage["completion_tokens"] += 1
                    self.generated.append(token)
                yield token
                if self.llama.n_tokens >= self.llama.n_ctx():
                    # the context is full; llama-cpp-python would decode past it and fail, as it goes on past
                    # max_tokens to complete a UTF-8 character: end the reply here ("length")
                    return
        return counted

    def arguments(self, path: str, request: dict) -> dict:
        """llama-cpp-python's keyword arguments for the request, its request models' defaults filled in."""
        from llama_cpp.server.types import CreateCompletionRequest
        chat = path == "/v1/chat/completions"
        body = chat_request(request) if chat else CreateCompletionRequest.model_validate(request)
        kwargs = body.model_dump(include=(self.FIELDS[path] & LLAMA_ARGUMENTS) | {"messages" if chat else "prompt"})
        if body.logit_bias:
            kwargs["logit_bias"] = {int(token): bias for token, bias in body.logit_bias.items()}
        if chat:
            kwargs["messages"] = for_template(kwargs["messages"])
        return {**kwargs, "model": self.model_id}

    def call(self, path: str, request: dict, stream: bool):
        create = self.llama.create_chat_completion if path == "/v1/chat/completions" else self.llama.create_completion
        return create(**self.arguments(path, request), stream=stream)

    def logprobs(self, path: str, request: dict) -> dict:
        """A chat completion with OpenAI's logprobs. llama-cpp-python computes them only for a model loaded with
        logits_all (a context x vocabulary array: GBs for a 7B model), so they are taken from the logits each
        sampling step sees instead."""
        import llama_cpp
        steps = []

        def record(input_ids, scores):
            steps.append(log_softmax(scores))
            return scores
        kwargs = {**self.arguments(path, request), "logprobs": None, "top_logprobs": None,
                  "logits_processor": llama_cpp.LogitsProcessorList([record])}
        reply = self.llama.create_chat_completion(**kwargs)
        decode = lambda token: self.llama.detokenize([token]).decode("utf-8", errors="replace")
        reply["choices"][0]["logprobs"] = logprobs_content(steps, self.generated, request.get("top_logprobs") or 0,
                                                           decode)
        return reply

    @staticmethod
    def client_error(error: ValueError, request: dict) -> ClientError | None:
        """llama.cpp's one error of the client's that serve.guard cannot see coming: a prompt over the context."""
        if match := re.match(r"Requested tokens \((\d+)\) exceed context window of (\d+)", str(error)):
            return context_error(int(match[2]), int(match[1]), request.get("max_tokens"))
        return None

    def complete(self, path: str, request: dict) -> dict:
        try:
            if request.get("logprobs"):
                return self.logprobs(path, request)
            return self.call(path, request, stream=False)
        except ValueError as e:
            raise self.client_error(e, request) or e from e

    def stream(self, path: str, request: dict) -> Iterator[dict]:
        chunks = self.call(path, request, stream=True)
        try:
            first = next(chunks)  # the prompt is evaluated here, before serve.api sends the response's headers
        except ValueError as e:
            raise self.client_error(e, request) or e from e
        yield first
        yield from chunks
        usage = {**self.usage, "total_tokens": self.usage["prompt_tokens"] + self.usage["completion_tokens"]}
        yield {"id": first["id"], "object": first["object"], "created": first["created"], "model": self.model_id,
               "choices": [], "usage": usage}


def until_stop(pieces: Iterator[str], stops: list[str]) -> Iterator[str]:
    """The text of `pieces` up to the first of `stops`, which OpenAI leaves out (transformers' stop_strings only end
    generation): what could begin a stop string is held back until the next piece tells."""
    held, keep = "", max(map(len, stops), default=1) - 1
    for piece in pieces:
        held += piece
        found = [i for i in (held.find(stop) for stop in stops) if i >= 0]
        if found:
            yield held[:min(found)]
            return
        if len(held) > keep:
            yield held[:len(held) - keep]
            held = held[len(held) - keep:]
    yield held


class OpenAIPenalties:
    """OpenAI's presence and frequency penalties over the generated tokens (transformers has neither):
    logit -= presence * (count > 0) + frequency * count."""

    def __init__(self, prompt_length: int, presence: float, frequency: float):
        self.prompt_length, self.presence, self.frequency = prompt_length, presence, frequency

    def __call__(self, input_ids, scores):
        import torch
        generated = input_ids[:, self.prompt_length:]
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.presence * (counts > 0) - self.frequency * counts


class Transformers:
    name = "transformers"
    FIELDS = {"/v1/chat/completions": CHAT | {"response_format"}}

    def __init__(self, path: Path, model_id: str):
        from medforge.modeling import load_model, load_tokenizer, model_params
        mp = model_params()
        self.model_id = model_id
        self.tokenizer, self.model = load_tokenizer(path, mp), load_model(path, mp).eval()
        self.context = self.model.config.max_position_embeddings
        end_ids = self.model.generation_config.eos_token_id
        self.end_ids = set(end_ids if isinstance(end_ids, list) else [end_ids])

    @staticmethod
    def unsupported(request: dict) -> tuple[str, str] | None:
        """(field, why) for what this engine cannot do though the field is in FIELDS."""
        if (request.get("response_format") or {}).get("type", "text") != "text":
            return "response_format", ("the transformers engine cannot constrain decoding to JSON; serve a GGUF "
                                       "(llama.cpp) for json_object and json_schema")
        return None

    def generate_kwargs(self, body, prompt) -> dict:
        import torch
        from transformers import LogitsProcessorList
        prompt_length = prompt.shape[1]
        max_tokens = body.max_tokens or self.context - prompt_length
        if prompt_length + max_tokens > self.context:
            raise context_error(self.context, prompt_length, body.max_tokens)
        if body.seed is not None:
            torch.manual_seed(body.seed)
        sample = body.temperature > 0
        penalties = [OpenAIPenalties(prompt_length, body.presence_penalty, body.frequency_penalty)] \
            if body.presence_penalty or body.frequency_penalty else []
        return dict(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_tokens,
                    do_sample=sample, temperature=body.temperature if sample else None,
                    top_p=body.top_p if sample else None, top_k=body.top_k if sample else None,
                    min_p=body.min_p if sample else None, repetition_penalty=body.repeat_penalty,
                    logits_processor=LogitsProcessorList(penalties), pad_token_id=self.tokenizer.pad_token_id,
                    stop_strings=stops(body) or None, tokenizer=self.tokenizer)

    def prepare(self, request: dict):
        body = chat_request(request)
        prompt = self.tokenizer.apply_chat_template(for_template(body.messages), tools=body.tools or None,
                                                    add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)["input_ids"].to(self.model.device)
        return body, prompt, self.generate_kwargs(body, prompt), f"chatcmpl-{uuid.uuid4().hex}"

    def usage(self, prompt, completion_tokens: int) -> dict:
        return {"prompt_tokens": prompt.shape[1], "completion_tokens": completion_tokens,
                "total_tokens": prompt.shape[1] + completion_tokens}

    def finish(self, new, max_new_tokens: int, cut: bool) -> tuple[int, str]:
        """(completion tokens, finish_reason) of the generated ids `new`, `cut` if a stop string ended the text.
        llama.cpp neither returns nor counts the end-of-turn token, so neither does this."""
        ended = new.shape[0] > 0 and new[-1].item() in self.end_ids
        count = new.shape[0] - ended
        return count, "stop" if ended or cut or count < max_new_tokens else "length"

    def complete(self, path: str, request: dict) -> dict:
        import torch
        body, prompt, kwargs, cid = self.prepare(request)
        with torch.no_grad():
            out = self.model.generate(**kwargs, return_dict_in_generate=True, output_logits=bool(body.logprobs))
        new = out.sequences[0, prompt.shape[1]:]
        decoded = self.tokenizer.decode(new, skip_special_tokens=True)
        text = "".join(until_stop(iter([decoded]), stops(body)))
        count, finish = self.finish(new, kwargs["max_new_tokens"], cut=text != decoded)
        new = new[:count]
        choice = {"index": 0, "message": {"role": "assistant", "content": text},
                  "logprobs": logprobs_content([log_softmax(step[0].float().numpy()) for step in out.logits],
                                               new.tolist(), body.top_logprobs or 0,
                                               lambda token: self.tokenizer.decode([token])) if body.logprobs else None,
                  "finish_reason": finish}
        return {"id": cid, "object": "chat.completion", "created": int(time.time()), "model": self.model_id,
                "choices": [choice], "usage": self.usage(prompt, count)}

    def stream(self, path: str, request: dict) -> Iterator[dict]:
        import torch
        from transformers import StoppingCriteria, TextIteratorStreamer

        body, prompt, kwargs, cid = self.prepare(request)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stopped, generated = threading.Event(), {}

        class Stopped(StoppingCriteria):  # the client went away: stop generating
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), stopped.is_set(), dtype=torch.bool)

        def run():
            try:
                with torch.no_grad():
                    generated["sequence"] = self.model.generate(**kwargs, streamer=streamer,
                                                                stopping_criteria=[Stopped()])[0, prompt.shape[1]:]
            except Exception as e:  # noqa: BLE001 (re-raised below, in the request's thread)
                generated["error"] = e
                streamer.end()

        def chunk(delta, finish=None):
            return {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": self.model_id,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield chunk({"role": "assistant"})
            raw = []
            for text in until_stop((raw.append(piece) or piece for piece in streamer), stops(body)):
                if text:
                    yield chunk({"content": text})
        finally:
            stopped.set()
            thread.join()
        if "error" in generated:
            raise generated["error"]
        count, finish = self.finish(generated["sequence"], kwargs["max_new_tokens"],
                                    cut=any(stop in "".join(raw) for stop in stops(body)))
        yield chunk({}, finish)
        yield {**chunk({}), "choices": [], "usage": self.usage(prompt, count)}
