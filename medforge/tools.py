"""Tool calls between OpenAI's wire form and the chat templates, and the calls in a model's reply.

OpenAI sends a call's arguments as JSON text; the templates render them as an object (Qwen's `tojson`), so requests
are turned into the canonical form of medforge/formats.py before rendering. A reply calls tools in the form its
template taught: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (Qwen, the tiny model) or a bare
`{"name": ..., "parameters": {...}}` (Llama 3.1).
"""
from __future__ import annotations

import json
import re
import uuid

TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)


def for_template(messages: list[dict]) -> list[dict]:
    """Request messages with each tool call's arguments parsed from JSON text, as the templates render them."""
    def call(c: dict) -> dict:
        function = c.get("function") or {}
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                pass  # rendered as sent
        return {"type": "function", "function": {"name": function.get("name"), "arguments": arguments}}
    return [{**m, "tool_calls": [call(c) for c in m["tool_calls"]]} if m.get("tool_calls") else m for m in messages]


def as_call(value) -> dict | None:
    """{"name", "arguments"} of a parsed call, else None."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    return {"name": value["name"], "arguments": arguments} if isinstance(arguments, dict) else None


def parse(reply: str) -> tuple[str, list[dict]]:
    """(the reply's text outside its calls, its calls as {"name", "arguments"}). What does not parse as a call stays
    in the text."""
    calls = []

    def take(match: re.Match) -> str:
        try:
            call = as_call(json.loads(match.group(1)))
        except json.JSONDecodeError:
            call = None
        if call is None:
            return match.group(0)
        calls.append(call)
        return ""

    text = TAGGED.sub(take, reply).strip()
    if not calls and text.startswith("{"):  # Llama 3.1: the whole reply is the call
        try:
            call = as_call(json.loads(text))
        except json.JSONDecodeError:
            call = None
        if call:
            return "", [call]
    return text, calls


def openai_calls(calls: list[dict]) -> list[dict]:
    """OpenAI's `tool_calls` of a message: ids, and arguments as JSON text."""
    return [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)}}
            for c in calls]
