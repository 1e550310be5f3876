"""The personal-data gate (medforge/phi.py, `data.phi`): what it finds, what it leaves alone, and `prepare`'s report,
mask and reject."""
import json

import pytest

from medforge import phi
from tests.test_prepare import read, run_prepare, workdir, write  # noqa: F401 (workdir is a fixture)

FOUND = [
    ("我的手机是13812345678，请回电。", "phone", "13812345678"),
    ("call +86 138-1234-5678 today", "phone", "+86 138-1234-5678"),
    ("总机 010-12345678", "phone", "010-12345678"),
    ("reach me at 647-717-5780 or", "phone", "647-717-5780"),
    ("US office +1 415 555 0132.", "phone", "+1 415 555 0132"),
    ("邮箱zhang.san@example.com。", "email", "zhang.san@example.com"),
    ("身份证号11010519491231002X", "cn_id", "11010519491231002X"),
    ("护照号E12345678，", "passport", "E12345678"),
    ("passport EA1234567", "passport", "EA1234567"),
    ("卡号 4111111111111111", "bank_card", "4111111111111111"),
]
LEFT_ALONE = [
    "血压 140/90 mmHg，心率 88 次/分，血糖 6.1 mmol/L，剂量 500 mg，每日 3 次",
    "2024-03-05 复诊，2024年3月5日 12:30，ICD-10 I10，病历编号 20240305123",
    "身份证号 110105194912310021",  # wrong check character
    "身份证号 110105194913310028",  # month 13
    "卡号 4111111111111112",  # fails the Luhn check
    "Take 1-2 tablets 3 times a day; NCT01234567; PMID 31234567; email the clinic",
]


@pytest.mark.parametrize("text, kind, value", FOUND)
def test_finds_personal_data(text, kind, value):
    assert [(k, text[s:e]) for k, s, e in phi.findings(text)] == [(kind, value)]


@pytest.mark.parametrize("text", LEFT_ALONE)
def test_leaves_clinical_numbers_alone(text):
    assert phi.findings(text) == []


RECORDS = [
    {"messages": [{"role": "user", "content": "我的电话13812345678，邮箱 a.b@example.com"},
                  {"role": "assistant", "content": "请到心内科就诊。"}]},
    {"messages": [{"role": "user", "content": "头痛怎么办？"}, {"role": "assistant", "content": "请休息。"}]},
]


@pytest.mark.parametrize("action", ["report", "mask", "reject"])
def test_prepare_reports_masks_or_rejects(workdir, action):  # noqa: F811
    source = write(workdir / "sft.jsonl", [json.dumps(r, ensure_ascii=False) for r in RECORDS])
    metrics = run_prepare(workdir, sft=[source], phi=action)
    assert metrics["phi"] == {"action": action, "findings": {source: {"phone": 1, "email": 1, "records": 1}}}
    prepared = workdir / "data/prepared"
    out = read(prepared / "sft_train.jsonl") + read(prepared / "sft_validation.jsonl")
    first = [r["messages"][0]["content"] for r in out]
    rejects = read(prepared / "rejects.jsonl")
    if action == "report":
        assert sorted(first) == sorted(r["messages"][0]["content"] for r in RECORDS) and rejects == []
    elif action == "mask":
        assert sorted(first) == ["头痛怎么办？", "我的电话[phone]，邮箱 [email]"] and rejects == []
    else:
        assert first == ["头痛怎么办？"] and metrics["sft"]["train"] + metrics["sft"]["validation"] == 1
        assert rejects == [{"source": source, "line": 1, "kind": "sft", "error": "personal data: email, phone (data.phi)"}]
        assert "13812345678" not in (prepared / "rejects.jsonl").read_text(encoding="utf-8")
