"""Tool calling served: a tiny model taught one tool-using conversation (SFT under its template), served on both
engines, answers the official `openai` SDK with OpenAI-shaped `tool_calls`, takes the call and its result back in
the conversation, and streams the call. The reply parser (medforge/tools.py) on the forms the templates teach."""
import json
from dataclasses import replace

import openai
import pytest

from medforge import params, tools
from tests.conftest import CORPUS

FIND = {"type": "function", "function": {"name": "find_department", "description": "The department for a condition",
                                         "parameters": {"type": "object",
                                                        "properties": {"condition": {"type": "string"}}}}}
ASK = [{"role": "user", "content": "Which department treats hypertension?"}]
CALL = {"type": "function", "function": {"name": "find_department", "arguments": {"condition": "hypertension"}}}
RESULT = {"role": "tool", "content": '{"department": "cardiology"}'}
ANSWER = "Cardiology."
KEY = "tool-key"
FP32 = params.load("model", dtype="float32", attn_implementation="sdpa")


@pytest.fixture(scope="module")
def tool_model(tmp_path_factory):
    """The tiny model after SFT on one tool-using conversation, until it says it back."""
    from medforge.tiny import build_tiny
    from medforge.train import make_trainer
    base = tmp_path_factory.mktemp("tool-base")
    tiny = replace(params.load("model").tiny, vocab_size=600, hidden_size=256, intermediate_size=256, num_layers=2,
                   num_heads=4, num_kv_heads=2, max_position_embeddings=512)
    build_tiny(tiny, CORPUS * 20 + [json.dumps(FIND), json.dumps(CALL)] * 20, base)
    record = {"messages": [*ASK, {"role": "assistant", "content": "", "tool_calls": [CALL]}, RESULT,
                           {"role": "assistant", "content": ANSWER}], "tools": [FIND]}
    p = params.load("sft", init=str(base), finetuning="full", packing=False, max_length=512, batch_size=1,
                    learning_rate=3e-3, max_steps=80, logging_steps=80, warmup_ratio=0.0, epochs=1)
    out = tmp_path_factory.mktemp("tool-model")
    trainer = make_trainer(p, [record] * 80, None, str(out), assistant_only_loss=True, mp=FP32)
    trainer.train()
    trainer.save_model(str(out))
    trainer.processing_class.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module", params=["llama.cpp", "transformers"])
def client(request, tool_model, start_server, tmp_path_factory):
    model = tool_model
    if request.param == "llama.cpp":
        from stages.gguf import convert
        model = tmp_path_factory.mktemp("tool-gguf") / "model-f16.gguf"
        convert(tool_model, model)
    url = start_server(model, "--api-key", KEY, "--system-prompt", "")
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=120)


def chat(client, messages, **kwargs):
    return client.chat.completions.create(model="medforge", messages=messages, tools=[FIND], temperature=0,
                                          max_tokens=64, extra_body={"repeat_penalty": 1.0}, **kwargs)


def test_the_reply_calls_the_tool_as_openai_does(client):
    choice = chat(client, ASK).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert (call.function.name, json.loads(call.function.arguments)) == ("find_department", {"condition": "hypertension"})


def test_the_call_and_its_result_go_back_in_and_the_answer_comes_out(client):
    sent = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "find_department", "arguments": json.dumps({"condition": "hypertension"})}}]}
    choice = chat(client, [*ASK, sent, {**RESULT, "tool_call_id": "call_1"}]).choices[0]
    assert (choice.finish_reason, choice.message.content, choice.message.tool_calls) == ("stop", ANSWER, None)


def test_a_streamed_call_arrives_as_tool_call_deltas(client):
    chunks = list(chat(client, ASK, stream=True))
    calls = [c for chunk in chunks for choice in chunk.choices for c in (choice.delta.tool_calls or [])]
    assert [(c.index, c.function.name, json.loads(c.function.arguments)) for c in calls] == \
        [(0, "find_department", {"condition": "hypertension"})]
    assert [choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason] == \
        ["tool_calls"]


def test_tool_choice_none_leaves_the_tools_out_and_forcing_a_call_is_refused(client):
    plain = chat(client, ASK, tool_choice="none").choices[0]
    assert plain.message.tool_calls is None and plain.finish_reason in ("stop", "length")
    with pytest.raises(openai.BadRequestError, match="tool_choice"):
        chat(client, ASK, tool_choice="required")


@pytest.mark.parametrize("reply, text, calls", [
    ('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>', "", [{"name": "f", "arguments": {"a": 1}}]),
    ('Let me check.<tool_call>{"name": "f", "arguments": {}}</tool_call><tool_call>{"name": "g", "arguments": '
     '{"b": "x"}}</tool_call>', "Let me check.", [{"name": "f", "arguments": {}}, {"name": "g", "arguments": {"b": "x"}}]),
    ('{"name": "f", "parameters": {"a": 1}}', "", [{"name": "f", "arguments": {"a": 1}}]),  # Llama 3.1
    ("<tool_call>{not json}</tool_call>", "<tool_call>{not json}</tool_call>", []),  # stays text
    ('{"answer": 42}', '{"answer": 42}', []),
    ("Cardiology.", "Cardiology.", []),
])
def test_the_parser_reads_the_forms_the_templates_teach(reply, text, calls):
    assert tools.parse(reply) == (text, calls)


def test_eval_scores_the_right_function_with_the_right_arguments(tmp_path):
    from eval.run import tool_call_scores
    held_out = tmp_path / "tool_eval.jsonl"
    held_out.write_text(json.dumps({"messages": [*ASK, {"role": "assistant", "content": "", "tool_calls": [CALL]}],
                                    "tools": [FIND]}) + "\n", encoding="utf-8")
    replies = ['<tool_call>{"name": "find_department", "arguments": {"condition": "hypertension"}}</tool_call>',
               '<tool_call>{"name": "find_department", "arguments": {"condition": "diabetes"}}</tool_call>',
               '<tool_call>{"name": "book_appointment", "arguments": {"condition": "hypertension"}}</tool_call>',
               "Cardiology."]

    class Replies:  # a model variant that gives each reply in turn
        def generate(self, prompts, max_new_tokens, offered, batch_size):
            assert offered == [[FIND]] and prompts == [ASK]
            return [replies.pop(0)], 0

    scores = [tool_call_scores(Replies(), params.load("eval", tools=str(held_out))) for _ in range(4)]
    assert [(s["tool_call_acc"], s["tool_name_acc"]) for s in scores] == [(1, 1), (0, 1), (0, 0), (0, 0)]
