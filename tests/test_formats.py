import json
from pathlib import Path

import pytest

from medforge.formats import FormatError, to_chat, to_mcq, to_preference, to_pretrain, to_question

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "medicalgpt"
U, A, S = "user", "assistant", "system"


def msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


def test_pretrain_text():
    assert to_pretrain({"text": "发热是常见症状。"}) == {"text": "发热是常见症状。"}


def test_sharegpt_conversations_with_system():
    record = {"conversations": [{"from": "system", "value": "你是医生"}, {"from": "human", "value": "头痛怎么办？"},
                                {"from": "gpt", "value": "请休息。"}, {"from": "human", "value": "还有呢？"},
                                {"from": "gpt", "value": "多喝水。"}]}
    assert to_chat(record)["messages"] == msgs((S, "你是医生"), (U, "头痛怎么办？"), (A, "请休息。"), (U, "还有呢？"),
                                               (A, "多喝水。"))


def test_openai_messages_pass_through():
    record = {"messages": msgs((U, "Hi"), (A, "Hello"))}
    assert to_chat(record) == record


def test_alpaca_with_input_history_and_system():
    record = {"instruction": "Summarise", "input": "fever and cough", "output": "Likely a cold.",
              "history": [["first q", "first a"]], "system": "Be brief."}
    assert to_chat(record)["messages"] == msgs((S, "Be brief."), (U, "first q"), (A, "first a"),
                                               (U, "Summarise\nfever and cough"), (A, "Likely a cold."))


def test_preference_formats_agree():
    expected = {"prompt": msgs((U, "q")), "chosen": "good", "rejected": "bad"}
    assert to_preference({"prompt": "q", "chosen": "good", "rejected": "bad"}) == expected
    assert to_preference({"prompt": msgs((U, "q")), "chosen": [{"role": "assistant", "content": "good"}],
                          "rejected": "bad"}) == expected
    assert to_preference({"conversations": [{"from": "human", "value": "q"}], "chosen": "good",
                          "rejected": "bad"}) == expected
    assert to_preference({"question": "q", "response_chosen": "good", "response_rejected": "bad"}) == expected


def test_medicalgpt_old_reward_format_with_history_and_system():
    record = {"system": "sys", "history": [["h1", "a1"]], "question": "q", "response_chosen": "good",
              "response_rejected": "bad"}
    assert to_preference(record)["prompt"] == msgs((S, "sys"), (U, "h1"), (A, "a1"), (U, "q"))


TOOL = {"name": "find_department", "description": "诊治某种疾病的科室",
        "parameters": {"type": "object", "properties": {"condition": {"type": "string"}}, "required": ["condition"]}}
CANONICAL_TOOL_USE = {
    "messages": [{"role": "user", "content": "高血压挂哪个科？"},
                 {"role": "assistant", "content": "", "tool_calls": [
                     {"type": "function", "function": {"name": "find_department", "arguments": {"condition": "高血压"}}}]},
                 {"role": "tool", "content": '{"department": "心内科"}'},
                 {"role": "assistant", "content": "请挂心内科。"}],
    "tools": [{"type": "function", "function": TOOL}]}


def test_medicalgpt_and_openai_tool_use_import_alike():
    medicalgpt = {"conversations": [  # MedicalGPT's --tool_format: function_call / observation turns, tools as text
        {"from": "human", "value": "高血压挂哪个科？"},
        {"from": "function_call", "value": json.dumps({"name": "find_department", "arguments": {"condition": "高血压"}},
                                                      ensure_ascii=False)},
        {"from": "observation", "value": '{"department": "心内科"}'},
        {"from": "gpt", "value": "请挂心内科。"}], "tools": json.dumps([TOOL], ensure_ascii=False)}
    openai = {"messages": [
        {"role": "user", "content": "高血压挂哪个科？"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "find_department", "arguments": json.dumps({"condition": "高血压"}, ensure_ascii=False)}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"department": "心内科"}'},
        {"role": "assistant", "content": "请挂心内科。"}], "tools": [{"type": "function", "function": TOOL}]}
    assert to_chat(medicalgpt) == to_chat(openai) == to_chat(CANONICAL_TOOL_USE) == CANONICAL_TOOL_USE
    # no tools: the record stays as it was ("tools": "[]" is MedicalGPT's way of saying none)
    plain = {"conversations": medicalgpt["conversations"][:1] + medicalgpt["conversations"][3:], "tools": "[]"}
    assert to_chat(plain) == {"messages": [{"role": "user", "content": "高血压挂哪个科？"},
                                           {"role": "assistant", "content": "请挂心内科。"}]}
    # calls in a row are one assistant turn (parallel calls)
    twice = dict(medicalgpt, conversations=[*medicalgpt["conversations"][:2], medicalgpt["conversations"][1],
                                            *medicalgpt["conversations"][2:]])
    assert len(to_chat(twice)["messages"][1]["tool_calls"]) == 2


@pytest.mark.parametrize("change, field", [
    ({"tools": "[]"}, "tools"),  # a call to an undeclared function
    ({"tools": "[{bad"}, "tools"),
    ({"tools": [{"description": "no name"}]}, "tools[0].name"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{not json"}]},
     "conversations[1].value"),
    ({"conversations": [{"from": "human", "value": "q"},
                        {"from": "function_call", "value": '{"name": "find_department", "arguments": "[1]"}'}]},
     "conversations[1].value.arguments"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "observation", "value": "{}"},
                        {"from": "gpt", "value": "a"}]}, "conversations"),  # a result nobody asked for
])
def test_bad_tool_use_names_the_field(change, field):
    record = {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": json.dumps(
        {"name": "find_department", "arguments": {}})}, {"from": "observation", "value": "{}"},
        {"from": "gpt", "value": "a"}], "tools": [TOOL], **change}
    with pytest.raises(FormatError) as e:
        to_chat(record)
    assert e.value.field == field


@pytest.mark.parametrize("record, expected", [
    # MedicalGPT's GRPO format (data/grpo/sample.jsonl): free text, and its arithmetic questions
    ({"question": "膺窗穴的定位是什么?", "answer": "第3肋间隙，距前正中线4寸。"},
     {"question": "膺窗穴的定位是什么?", "answer": "第3肋间隙，距前正中线4寸。", "match": "exact"}),
    ({"question": "88+76=?", "answer": "164"}, {"question": "88+76=?", "answer": "164", "match": "numeric"}),
    ({"question": "How many?", "answer": 12.5}, {"question": "How many?", "answer": "12.5", "match": "numeric"}),
    # GSM8K: the reasoning, then the final answer after ####
    ({"question": "Natalia sold 48 clips in April and half as many in May. How many in all?",
      "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\n48+24 = <<48+24=72>>72\n#### 72"},
     {"question": "Natalia sold 48 clips in April and half as many in May. How many in all?", "answer": "72",
      "match": "numeric"}),
    ({"question": "Dose?", "answer": "1,250", "match": "exact"}, {"question": "Dose?", "answer": "1,250", "match": "exact"}),
    ({"question": "Which?", "options": {"A": "x", "B": "y"}, "answer": "B", "lang": "en"},
     {"question": "Which?", "options": {"A": "x", "B": "y"}, "answer": "B", "match": "choice"}),
])
def test_questions_carry_how_their_answer_is_checked(record, expected):
    assert to_question(record) == expected
    assert to_question(expected) == expected  # canonical records import unchanged


@pytest.mark.parametrize("importer, record, field", [
    (to_pretrain, {"text": ""}, "text"),
    (to_pretrain, {"content": "x"}, "text"),
    (to_chat, {"conversations": [{"from": "doctor", "value": "x"}]}, "conversations[0].from"),
    (to_chat, {"conversations": [{"from": "human", "value": ""}]}, "conversations[0].value"),
    (to_chat, {"messages": msgs((U, "q"))}, "messages"),                      # no assistant answer
    (to_chat, {"messages": msgs((A, "a"), (U, "q"))}, "messages"),            # wrong order
    (to_chat, {"instruction": "q"}, "output"),
    (to_chat, {"foo": 1}, "messages"),
    (to_preference, {"prompt": "q", "chosen": "", "rejected": "bad"}, "chosen"),
    (to_preference, {"prompt": "q", "chosen": "same", "rejected": "same"}, "rejected"),
    (to_preference, {"prompt": msgs((U, "q"), (A, "a")), "chosen": "c", "rejected": "r"}, "prompt"),
    (to_preference, {"question": "q", "response_chosen": "c"}, "response_rejected"),
    (to_mcq, {"question": "q", "options": {"A": "x", "B": "y"}, "answer": "C"}, "answer"),
    (to_mcq, {"question": "q", "options": ["x", "y"], "answer": "A"}, "options"),
    (to_question, {"question": "q", "answer": ""}, "answer"),
    (to_question, {"question": "q", "answer": "x", "match": "fuzzy"}, "match"),
    (to_question, {"question": "q", "answer": "about ten", "match": "numeric"}, "answer"),
    (to_question, {"question": "q", "options": {"A": "x", "B": "y"}, "answer": "C"}, "answer"),
])
def test_bad_records_name_the_field(importer, record, field):
    with pytest.raises(FormatError) as e:
        importer(record)
    assert e.value.field == field
    assert f"field '{field}': expected" in str(e.value)


@pytest.mark.skipif(not SHARED.exists(), reason="../shared sample data not present")
@pytest.mark.parametrize("name, importer", [("medical_sft_1K_format.jsonl", to_chat),
                                            ("dpo_zh_500.jsonl", to_preference)])
def test_medicalgpt_sample_files_import(name, importer):
    with open(SHARED / name, encoding="utf-8") as f:
        records = [importer(json.loads(line)) for line in f if line.strip()]
    assert len(records) >= 500
