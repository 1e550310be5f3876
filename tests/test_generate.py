"""The built-in dataset: deterministic, bilingual, and held-out questions phrased unlike any training text."""
import json
import random

import pytest

from medforge import knowledge
from medforge.formats import to_chat, to_mcq, to_preference, to_pretrain
from stages import generate
from tests.pipeline import ROOT, set_params, stage_args

ARGS = stage_args("generate")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen")
    set_params(path, {"generate": {"seed": 3, "conditions": 0, "mcq_eval_size": 200, "preference_eval_size": 100,
                                   "wrong_answers_per_fact": 2}}, base=ROOT)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(path)
        generate.main(ARGS)
        first = {f.name: f.read_bytes() for f in (path / "data/generated").iterdir()}
        generate.main(ARGS)
        second = {f.name: f.read_bytes() for f in (path / "data/generated").iterdir()}
    assert first == second, "generation is not deterministic"
    return {name: [json.loads(line) for line in data.decode().splitlines()] for name, data in first.items()}


def test_knowledge_table_is_complete():
    rows = knowledge.load()
    assert len(rows) >= 150
    assert {r["department"] for r in rows} == set(knowledge.DEPARTMENTS)
    for r in rows:
        for lang in knowledge.LANGS:
            c = knowledge.localized(r, lang)
            assert c.name and c.care and len(c.symptoms) >= 3 and len(c.red_flags) >= 2


def test_every_record_is_canonical(generated):
    for name, importer in [("pretrain.jsonl", to_pretrain), ("sft.jsonl", to_chat),
                           ("preference.jsonl", to_preference), ("preference_eval.jsonl", to_preference),
                           ("mcq_eval.jsonl", to_mcq)]:
        assert generated[name], name
        for record in generated[name]:
            importer(record)


def test_dataset_is_bilingual_with_multi_turn_and_system_prompts(generated):
    sft = generated["sft.jsonl"]
    has_chinese = [any("\u4e00" <= ch <= "\u9fff" for m in c["messages"] for ch in m["content"]) for c in sft]
    assert 0.3 < sum(has_chinese) / len(sft) < 0.7
    assert any(sum(m["role"] == "assistant" for m in c["messages"]) >= 3 for c in sft)
    assert any(c["messages"][0]["role"] == "system" for c in sft)


def test_sft_asks_every_third_phrasing_again_with_two_options_listed(generated):
    listed = [c["messages"][-2:] for c in generated["sft.jsonl"] if "\nA. " in c["messages"][-2]["content"]]
    phrasings = sum(len(generate.SHORT_QA["en"][kind][0]) for kind in generate.MCQ_ANSWER)
    assert len(listed) == len(generate.knowledge.load()) * len(generate.knowledge.LANGS) * phrasings // 3
    for user, assistant in listed:
        question, *options = user["content"].split("\n")
        assert [o[:3] for o in options] == ["A. ", "B. "] and options[0] != options[1]
        assert assistant["content"] in [o[3:] for o in options]


def test_mcq_has_four_distinct_options_and_held_out_phrasing(generated):
    training_questions = {m["content"].split("\n")[0] for c in generated["sft.jsonl"] for m in c["messages"]
                          if m["role"] == "user"}
    for q in generated["mcq_eval.jsonl"]:
        assert len(set(q["options"].values())) == 4 and q["answer"] in q["options"]
        assert q["question"] not in training_questions
    for lang, templates in generate.EVAL_PROMPTS.items():
        training_templates = {q for questions, _ in generate.SHORT_QA[lang].values() for q in questions}
        assert not set(templates.values()) & training_templates
    answers = [q["answer"] for q in generated["mcq_eval.jsonl"]]
    assert max(answers.count(k) for k in "ABCD") < 0.4 * len(answers)


def test_preference_pairs_teach_safety(generated):
    pairs = generated["preference.jsonl"]
    kinds = {p["kind"] for p in pairs}
    assert {"red_flags", "dangerous", "department", "care"} <= kinds
    for p in pairs:
        if p["kind"] == "red_flags":
            dismissive = generate.DISMISSIVE[p["lang"]]
            assert p["rejected"].endswith(dismissive) and dismissive not in p["chosen"]
    eval_prompts = {p["prompt"][-1]["content"] for p in generated["preference_eval.jsonl"]}
    assert not eval_prompts & {p["prompt"][-1]["content"] for p in pairs}


def test_knowledge_facts_come_with_several_wrong_answers():
    conds = [knowledge.localized(r, lang) for r in knowledge.load()[::20] for lang in knowledge.LANGS]
    by_lang = generate.by_language(conds)
    pairs = iter(generate.knowledge_pairs(random.Random(0), conds, by_lang, 3))
    for c in conds:
        for kind in ("department", "care"):
            wrong = {generate.answer_of(kind, o) for o in by_lang[c.lang] if o.department_key != c.department_key}
            prompts = {generate.fill(q, c) for q in generate.SHORT_QA[c.lang][kind][0]}
            group = [next(pairs) for _ in range(min(3, len(wrong)))]
            assert {p["chosen"] for p in group} == {generate.answer_of(kind, c)}
            assert len({p["rejected"] for p in group}) == len(group) >= 2 and {p["rejected"] for p in group} <= wrong
            assert {p["prompt"][-1]["content"] for p in group} <= prompts
            assert {(p["kind"], p["lang"]) for p in group} == {(kind, c.lang)}
    assert next(pairs, None) is None


def test_wrong_answers_per_fact_leaves_the_other_files_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = {}
    for n in (0, 5):
        set_params(tmp_path, {"generate": {"conditions": 6, "mcq_eval_size": 20, "preference_eval_size": 10,
                                           "wrong_answers_per_fact": n}}, base=ROOT)
        generate.main(ARGS)
        files[n] = {f.name: f.read_text() for f in (tmp_path / "data/generated").iterdir()}
    preference = files[0].pop("preference.jsonl"), files[5].pop("preference.jsonl")
    assert files[0] == files[5]
    assert preference[1].startswith(preference[0]) and len(preference[1]) > len(preference[0])


def test_eval_size_larger_than_the_data_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    set_params(tmp_path, {"generate": {"conditions": 5, "mcq_eval_size": 100}}, base=ROOT)
    with pytest.raises(SystemExit, match=r"generate.mcq_eval_size: 100 is more than the 40 items"):
        generate.main(ARGS)
    assert not (tmp_path / "data/generated").exists()
