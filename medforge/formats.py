"""Importers: the formats users already have -> medforge's canonical records.

Canonical records:
  pretrain    {"text": str}
  chat        {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...], "tools": [...]}
              tool use as OpenAI and the chat templates have it: an assistant turn that calls tools carries
              "tool_calls": [{"type": "function", "function": {"name": str, "arguments": {...}}}], the results come
              back as "tool" turns, and "tools" (only when there are some) lists
              [{"type": "function", "function": {"name", "description", "parameters": JSON schema}}]
  preference  {"prompt": [messages ending with a user or tool turn], "chosen": answer, "rejected": answer, "tools"}
              an answer is text, or an assistant message that calls tools
  questions   {"question": str, "answer": str, "match": "choice"|"numeric"|"exact", "options": {key: text}}
              (GRPO's prompts; `options` only for "choice"; rewards in medforge/rewards.py)

Each importer raises FormatError(field, expected) on a bad record; the caller adds file and line.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from medforge.io import read_jsonl

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "bot": "assistant", "model": "assistant",
                  "function_call": "assistant", "observation": "tool"}  # MedicalGPT's tool format
OPENAI_ROLES = {r: r for r in ("system", "user", "assistant", "tool")}


class FormatError(ValueError):
    def __init__(self, field: str, expected: str):
        super().__init__(f"field '{field}': expected {expected}")
        self.field, self.expected = field, expected

    def __reduce__(self):  # pickled to and from prepare's worker processes
        return FormatError, (self.field, self.expected)


def _text(record: dict, field: str) -> str:
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        raise FormatError(field, "a non-empty string")
    return value


def _turns(history, field: str) -> list[dict]:
    """MedicalGPT/Alpaca `history`: [[question, answer], ...]."""
    if history is None:
        return []
    if not isinstance(history, list):
        raise FormatError(field, "a list of [question, answer] pairs")
    messages = []
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) and x.strip()
                                                                          for x in pair)):
            raise FormatError(f"{field}[{i}]", "a [question, answer] pair of non-empty strings")
        messages += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    return messages


def _json(value, field: str, expected: str):
    """`value`, or the JSON it holds when it is a string."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise FormatError(field, f"{expected} (as JSON)") from None


def _tool_call(value, field: str) -> dict:
    """A call as MedicalGPT ({"name", "arguments"}, as JSON text) or OpenAI ({"function": {"name", "arguments": JSON
    text}}) write it -> {"type": "function", "function": {"name", "arguments": {...}}}."""
    call = _json(value, field, 'a function call {"name": ..., "arguments": {...}}')
    if isinstance(call, dict) and isinstance(call.get("function"), dict):
        call, field = call["function"], f"{field}.function"
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"].strip():
        raise FormatError(f"{field}.name", "a function name")
    arguments = _json(call.get("arguments", {}), f"{field}.arguments", "an object")
    if not isinstance(arguments, dict):
        raise FormatError(f"{field}.arguments", "an object")
    return {"type": "function", "function": {"name": call["name"], "arguments": arguments}}


def _messages(items, field: str, role_key: str, content_key: str, roles: dict) -> list[dict]:
    if not isinstance(items, list) or not items:
        raise FormatError(field, "a non-empty list of messages")
    messages = []
    for i, m in enumerate(items):
        where = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise FormatError(where, "an object")
        role = roles.get(m.get(role_key))
        if role is None:
            raise FormatError(f"{where}.{role_key}", f"one of {sorted(set(roles))}, got {m.get(role_key)!r}")
        if m.get(role_key) == "function_call":  # MedicalGPT: the call is the turn's text; calls in a row are one turn
            call = _tool_call(m.get(content_key), f"{where}.{content_key}")
            if messages and messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
            continue
        content = m.get(content_key)
        if role == "assistant" and m.get("tool_calls") is not None:  # OpenAI: content may be empty or null
            calls = m["tool_calls"]
            if not isinstance(calls, list) or not calls:
                raise FormatError(f"{where}.tool_calls", "a non-empty list of tool calls")
            if content is not None and not isinstance(content, str):
                raise FormatError(f"{where}.{content_key}", "a string or null")
            messages.append({"role": role, "content": content or "",
                             "tool_calls": [_tool_call(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)]})
            continue
        if not isinstance(content, str) or not content.strip():
            raise FormatError(f"{where}.{content_key}", "a non-empty string")
        messages.append({"role": role, "content": content})
    return messages


def _tools(record: dict) -> list[dict]:
    """The functions a conversation may call: OpenAI's list or MedicalGPT's JSON text of bare schemas."""
    tools = _json(record.get("tools"), "tools", "a list of function schemas")
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise FormatError("tools", "a list of function schemas")
    canonical = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else tool
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise FormatError(f"tools[{i}].name", "a function name")
        if not isinstance(function.get("parameters", {}), dict):
            raise FormatError(f"tools[{i}].parameters", "a JSON schema object")
        canonical.append({"type": "function", "function": function})
    return canonical


def _check_order(messages: list[dict], field: str, last: str | tuple[str, ...]) -> list[dict]:
    """System first (optional), then user and assistant turns alternating, ending with `last`; an assistant turn that
    calls tools is followed by their results (tool turns), then the assistant again."""
    body = messages[1:] if messages[0]["role"] == "system" else messages
    expected = ("user",)
    for i, m in enumerate(body):
        if m["role"] not in expected:
            raise FormatError(field, f"user/assistant turns alternating after an optional system message; turn "
                                     f"{i + 1} is '{m['role']}' where {' or '.join(map(repr, expected))} was expected")
        expected = {"user": ("assistant",), "tool": ("tool", "assistant")}.get(
            m["role"], ("tool",) if m.get("tool_calls") else ("user",))
    last = (last,) if isinstance(last, str) else last
    if not body or body[-1]["role"] not in last:
        raise FormatError(field, f"a conversation ending with a {' or '.join(last)} turn")
    return messages


def _conversation(record: dict) -> tuple[str, list[dict]]:
    """Messages from OpenAI `messages` or ShareGPT `conversations`, plus the field name used."""
    if "messages" in record:
        return "messages", _messages(record["messages"], "messages", "role", "content", OPENAI_ROLES)
    if "conversations" in record:
        return "conversations", _messages(record["conversations"], "conversations", "from", "value",
                                          SHAREGPT_ROLES)
    raise FormatError("messages", "one of 'messages' (OpenAI) or 'conversations' (ShareGPT)")


def _with_system(record: dict, messages: list[dict], field: str = "system") -> list[dict]:
    system = record.get(field)
    if system is None or system == "" or (messages and messages[0]["role"] == "system"):
        return messages
    if not isinstance(system, str):
        raise FormatError(field, "a string")
    return [{"role": "system", "content": system}] + messages


def to_pretrain(record: dict) -> dict:
    return {"text": _text(record, "text")}


def to_chat(record: dict) -> dict:
    if "instruction" in record:  # Alpaca
        instruction = _text(record, "instruction")
        extra = record.get("input") or ""
        if not isinstance(extra, str):
            raise FormatError("input", "a string")
        prompt = f"{instruction}\n{extra}" if extra.strip() else instruction
        messages = _turns(record.get("history"), "history") + [
            {"role": "user", "content": prompt}, {"role": "assistant", "content": _text(record, "output")}]
        return {"messages": _check_order(_with_system(record, messages), "instruction", "assistant")}
    field, messages = _conversation(record)
    messages = _check_order(_with_system(record, messages, "system_prompt"), field, "assistant")
    tools = _tools(record)
    _declared(tools, messages, "tools")
    return {"messages": messages, "tools": tools} if tools else {"messages": messages}


REACT_CALL = re.compile(r"\s*Action:\s*(\S+)\s*\nAction Input:\s*(.+?)\s*", re.S)  # MedicalGPT's tool DPO pairs


def _response(record: dict, field: str) -> str | dict:
    """An answer: its text, or the assistant message that calls tools (OpenAI's form, or MedicalGPT's
    "Action: name\\nAction Input: {...}")."""
    value = record.get(field)
    if isinstance(value, dict):  # the canonical form of an answer that calls tools
        value = [value]
    if isinstance(value, list):  # TRL conversational form: [{"role": "assistant", "content": ...}]
        if len(value) == 1 and isinstance(value[0], dict) and value[0].get("role") == "assistant":
            if value[0].get("tool_calls"):
                return _messages(value, field, "role", "content", OPENAI_ROLES)[0]
            value = value[0].get("content")
        else:
            raise FormatError(field, "a string or a single assistant message")
    if not isinstance(value, str) or not value.strip():
        raise FormatError(field, "a non-empty string")
    react = REACT_CALL.fullmatch(value)
    if react:
        call = _tool_call({"name": react.group(1), "arguments": react.group(2)}, field)
        return {"role": "assistant", "content": "", "tool_calls": [call]}
    return value


def _declared(tools: list[dict], messages: list[dict], field: str) -> None:
    """Every function the messages call is one of `tools`."""
    names = {t["function"]["name"] for t in tools}
    for i, m in enumerate(messages):
        for call in m.get("tool_calls", []):
            if call["function"]["name"] not in names:
                raise FormatError(field, f"a declaration of every function called; turn {i + 1} calls "
                                         f"{call['function']['name']!r}")


def to_preference(record: dict) -> dict:
    if "question" in record:  # MedicalGPT's older reward format
        messages = _turns(record.get("history"), "history") + [
            {"role": "user", "content": _text(record, "question")}]
        prompt = _with_system(record, messages)
        chosen, rejected = _response(record, "response_chosen"), _response(record, "response_rejected")
        field = "question"
    elif isinstance(record.get("prompt"), str):
        prompt, field = [{"role": "user", "content": _text(record, "prompt")}], "prompt"
        chosen, rejected = _response(record, "chosen"), _response(record, "rejected")
    elif "prompt" in record:
        prompt, field = _messages(record["prompt"], "prompt", "role", "content", OPENAI_ROLES), "prompt"
        chosen, rejected = _response(record, "chosen"), _response(record, "rejected")
    else:
        field, prompt = _conversation(record)
        prompt = _with_system(record, prompt)
        chosen, rejected = _response(record, "chosen"), _response(record, "rejected")
    if chosen == rejected:
        raise FormatError("rejected", "a response different from 'chosen'")
    pair = {"prompt": _check_order(prompt, field, ("user", "tool")), "chosen": chosen, "rejected": rejected}
    tools = _tools(record)
    _declared(tools, [*prompt, *(a for a in (chosen, rejected) if isinstance(a, dict))], "tools")
    return {**pair, "tools": tools} if tools else pair


def to_mcq(record: dict) -> dict:
    question = _text(record, "question")
    options = record.get("options")
    if not isinstance(options, dict) or len(options) < 2 or not all(
            isinstance(v, str) and v.strip() for v in options.values()):
        raise FormatError("options", 'an object of at least two non-empty options, e.g. {"A": ..., "B": ...}')
    answer = record.get("answer")
    if answer not in options:
        raise FormatError("answer", f"one of the option keys {sorted(options)}, got {answer!r}")
    return {"question": question, "options": options, "answer": answer}


MATCHES = ("choice", "numeric", "exact")
GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.S)  # GSM8K: the reasoning, then "#### 42"
NUMBER = re.compile(r"^[-+]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?$")


def to_question(record: dict) -> dict:
    """A question with a checkable answer: multiple choice ({"question", "options", "answer": key}), MedicalGPT's
    GRPO format ({"question", "answer"}) or GSM8K's (an answer ending "#### 42"). How the answer is checked
    (`match`) comes from the record's own `match` field, else from its form: options -> choice, a number or a
    GSM8K answer -> numeric, other text -> exact (normalised)."""
    if "options" in record:
        return {**to_mcq(record), "match": "choice"}
    question = _text(record, "question")
    answer = record.get("answer")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise FormatError("answer", "a non-empty string or a number")
    final = GSM8K_ANSWER.search(answer)
    answer = (final.group(1) if final else answer).strip()
    match = record.get("match") or ("numeric" if final or NUMBER.match(answer) else "exact")
    if match not in MATCHES[1:]:
        raise FormatError("match", f'"numeric" or "exact" for a question without options, got {match!r}')
    if match == "numeric" and not NUMBER.match(answer):
        raise FormatError("answer", f"a number (match: numeric), got {answer!r}")
    return {"question": question, "answer": answer, "match": match}


IMPORTERS = {"pretrain": to_pretrain, "sft": to_chat, "preference": to_preference, "questions": to_question}


def mcq_prompt(record: dict) -> str:
    """How a multiple-choice question is shown to a model: the question, then one "A. option" line per option."""
    return "\n".join([record["question"], *(f"{key}. {text}" for key, text in record["options"].items())])


def read_canonical(path: str | Path, importer) -> list[dict]:
    """Every record of a JSONL file through `importer`; the first bad one stops with file:line and field."""
    records = []
    for line, raw in read_jsonl(path):
        try:
            records.append(importer(raw))
        except ValueError as e:
            raise SystemExit(f"{path}:{line}: {e}") from None
    return records
