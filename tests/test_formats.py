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
