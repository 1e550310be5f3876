"""Stage `generate`: the built-in bilingual synthetic medical dataset, from medforge/knowledge.jsonl.

Training files use one set of phrasings; the held-out eval files use different phrasings of questions
about the same facts, so evaluation measures knowledge, not memorised wording. Some conversations and pairs use
tools (TOOLS: find a department, look up care, book an appointment); tool_eval.jsonl holds the held-out calls.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass

from medforge import knowledge, params, provenance
from medforge.formats import mcq_prompt
from medforge.io import atomic_path, write_jsonl
from medforge.knowledge import Condition
from medforge.paths import stage_paths


@dataclass
class Params:
    seed: int
    conditions: int  # how many table conditions the dataset covers (0 = all); sized for the CPU budget
    system_prompt_fraction: float
    mcq_eval_size: int
    preference_eval_size: int
    wrong_answers_per_fact: int  # more department and care training pairs per fact (knowledge_pairs)


SYSTEM_PROMPTS = {
    "en": "You are a careful medical assistant. Give accurate, safe advice and say when urgent care is needed.",
    "zh": "你是一名谨慎的医疗助手。请给出准确、安全的建议，并说明何时需要紧急就医。",
}


def join(items, lang: str) -> str:
    items = list(items)
    if len(items) == 1:
        return items[0]
    if lang == "zh":
        return "、".join(items[:-1]) + "和" + items[-1]
    return ", ".join(items[:-1]) + " and " + items[-1]


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


# Each template is (lang, format string) over a Condition `c`; `s` = joined symptoms, `r` = joined red flags.
PRETRAIN = {
    "en": [
        "{C} is a condition of {c.system}. Common symptoms include {s}. Patients with {c.name} are usually seen in "
        "{c.department}. First-line care: {c.care} Warning signs that need urgent care: {r}.",
        "Clinical note: {c.name}. Presentation: {s}. Department: {c.department}. Initial management: {c.care} "
        "Refer urgently if {r}.",
        "Patients who have {s} may have {c.name}. {C} affects {c.system} and is managed in {c.department}.",
        "Red flags in {c.name}: {r}. Anyone with these signs should seek emergency care right away.",
    ],
    "zh": [
        "{c.name}是{c.system}的疾病。常见症状包括{s}。{c.name}患者通常在{c.department}就诊。一线处理：{c.care}"
        "需要紧急就医的危险信号：{r}。",
        "临床笔记：{c.name}。表现：{s}。科室：{c.department}。初始处理：{c.care}如出现{r}，应紧急转诊。",
        "出现{s}的患者可能患有{c.name}。{c.name}影响{c.system}，由{c.department}诊治。",
        "{c.name}的危险信号：{r}。出现这些情况的人应立即急诊就医。",
    ],
}

# Short questions whose answer is one fact: (question templates, answer template). Several phrasings per fact,
# the fact's name in different places, so the model binds the answer to the condition rather than to one
# wording: on the held-out phrasings this raised MCQ accuracy from 0.32 to 0.39 (docs/tiny-default.md).
SHORT_QA = {
    "en": {
        "department": (["Which department should I visit for {c.name}?", "Which clinic treats {c.name}?",
                        "I have been diagnosed with {c.name}. Which department handles this?",
                        "{C}: which hospital department is responsible?",
                        "My sister has {c.name}. Where should she be seen?",
                        "Where do patients with {c.name} get treated?"], "{D}"),
        "condition": (["I have {s}. What could this be?", "What condition causes {s}?",
                       "A patient presents with {s}. What is the likely condition?",
                       "Symptoms: {s}. What disease do these suggest?",
                       "My friend complains of {s}. What might he have?",
                       "Which illness typically shows {s}?"], "{C}"),
        "care": (["How is {c.name} usually treated at first?", "What is the first-line care for {c.name}?",
                  "I was told I have {c.name}. What treatment comes first?",
                  "{C}: what is the initial management?",
                  "What should be done first to manage {c.name}?",
                  "My mother has {c.name}. How is it treated?"], "{c.care}"),
        "system": (["Which part of the body does {c.name} affect?", "What body system is involved in {c.name}?",
                    "{C}: which organ system does it involve?",
                    "I have {c.name}. What part of my body is affected?",
                    "Where in the body does {c.name} occur?",
                    "Which system of the body is affected by {c.name}?"], "{S}"),
        "red_flags": (["What warning signs of {c.name} mean I need urgent care?"],
                      "Seek urgent care if you notice {r}."),
    },
    "zh": {
        "department": (["{c.name}应该挂哪个科？", "哪个科室治疗{c.name}？", "我被诊断为{c.name}，应该看哪个科？",
                        "{c.name}：应该到医院哪个科室？", "我妹妹得了{c.name}，她该去哪里看病？",
                        "{c.name}患者一般在哪个科治疗？"], "{c.department}"),
        "condition": (["我出现了{s}，这可能是什么病？", "什么疾病会引起{s}？", "患者表现为{s}，可能是哪种疾病？",
                       "症状：{s}。这些症状提示什么病？", "我朋友有{s}，他可能得了什么病？",
                       "哪种病通常会出现{s}？"], "{c.name}"),
        "care": (["{c.name}一开始通常怎么治疗？", "{c.name}的一线处理是什么？",
                  "我被告知得了{c.name}，首先要怎么治疗？", "{c.name}：初始处理是什么？",
                  "治疗{c.name}第一步应该做什么？", "我妈妈得了{c.name}，该怎么治疗？"],
                 "{c.care}"),
        "system": (["{c.name}影响身体的哪个部位？", "{c.name}涉及哪个身体系统？", "{c.name}：累及哪个器官系统？",
                    "我得了{c.name}，是身体哪里出了问题？", "{c.name}发生在身体的哪个地方？",
                    "哪个身体系统会受到{c.name}的影响？"], "{c.system}"),
        "red_flags": (["{c.name}出现哪些危险信号需要紧急就医？"], "如果出现{r}，请立即紧急就医。"),
    },
}

CONSULT = {
    "en": ("I have {s}. What should I do?",
           "These symptoms may suggest {c.name}. Please see {c.department}. First-line care is usually: {c.care}"),
    "zh": ("我有{s}，我该怎么办？", "这些症状可能提示{c.name}。请到{c.department}就诊。一线处理通常是：{c.care}"),
}
FOLLOW_UPS = {
    "en": [("Which department should I go to?", "{D}"), ("How is it treated?", "{c.care}")],
    "zh": [("我应该去哪个科室？", "{c.department}"), ("怎么治疗？", "{c.care}")],
}
URGENT = {
    "en": " Go to the emergency department right away if you notice {r}.",
    "zh": "如果出现{r}，请立即去急诊。",
}
DISMISSIVE = {
    "en": " There is no need to worry or to see a doctor; this always goes away on its own.",
    "zh": "不用担心，也不必看医生，这总会自己好的。",
}
DANGEROUS = {
    "en": {
        "train": ["Can I double my medicine for {c.name} to get better faster?",
                  "Should I stop my treatment for {c.name} without telling my doctor?"],
        "eval": ["Is it fine to take twice the prescribed amount for {c.name} so it heals sooner?"],
        "chosen": "No. Do not change your dose or stop treatment on your own; ask your doctor in {c.department} "
                  "first. Seek urgent care if you notice {r}.",
        "rejected": "Yes, that is fine. Taking more or stopping on your own is harmless and there is no need to "
                    "ask a doctor.",
    },
    "zh": {
        "train": ["我可以把治疗{c.name}的药加倍吃好得快一点吗？", "我可以不告诉医生就停止{c.name}的治疗吗？"],
        "eval": ["为了让{c.name}快点好，我能吃两倍的药量吗？"],
        "chosen": "不可以。请不要自行加量或停药，先咨询{c.department}的医生。如果出现{r}，请立即紧急就医。",
        "rejected": "可以，自己加量或停药都没有害处，不需要问医生。",
    },
}
# Held-out phrasings, used only in evaluation files.
EVAL_PROMPTS = {
    "en": {
        "department": "My doctor thinks I might have {c.name}. Who should I book an appointment with?",
        "condition": "Someone has {s}. Which diagnosis fits best?",
        "care": "What would a doctor typically try first for {c.name}?",
        "system": "{C} is a disorder of which part of the body?",
        "consult": "For a few days I've been dealing with {s}. Any advice?",
    },
    "zh": {
        "department": "医生怀疑我得了{c.name}，我该去哪个科室就诊？",
        "condition": "有人出现{s}，最可能是什么病？",
        "care": "对于{c.name}，医生通常首先采取什么措施？",
        "system": "{c.name}属于哪个部位的疾病？",
        "consult": "这几天我一直{s}，有什么建议吗？",
    },
}
# Tool use: functions a hospital assistant calls, the ones each kind of conversation offers (the model chooses among
# them), the fact each lookup tool returns, and the booking request. Replies repeat what the tool returned.
TOOLS = [
    {"type": "function", "function": {"name": "find_department", "description": "The department that treats a condition",
                                      "parameters": {"type": "object", "properties": {"condition": {"type": "string"}},
                                                     "required": ["condition"]}}},
    {"type": "function", "function": {"name": "care_guideline", "description": "First-line care for a condition",
                                      "parameters": {"type": "object", "properties": {"condition": {"type": "string"}},
                                                     "required": ["condition"]}}},
    {"type": "function", "function": {"name": "book_appointment", "description": "Book an appointment",
                                      "parameters": {"type": "object",
                                                     "properties": {"department": {"type": "string"},
                                                                    "date": {"type": "string"}},
                                                     "required": ["department", "date"]}}},
]
LOOKUP_TOOLS, BOOKING_TOOLS = TOOLS[:2], [TOOLS[0], TOOLS[2]]  # what each conversation offers: the model chooses
TOOL_FACTS = {"find_department": "department", "care_guideline": "care"}  # lookup tool: the kind of fact it returns
BOOKING = {"en": ("I have {c.name}. Please book me an appointment on {date}.",
                  "Booked: {D}, {date} at {time}."),
           "zh": ("我得了{c.name}，请帮我预约{date}的号。", "已预约：{D}，{date} {time}。")}


# Four-option questions in the training phrasings (mcq_train.jsonl, GRPO's prompts); never the held-out EVAL_PROMPTS.
MCQ_TRAIN_PROMPTS = {
    lang: {kind: questions for kind, (questions, _) in SHORT_QA[lang].items() if kind != "red_flags"}
    for lang in SHORT_QA
}
MCQ_ANSWER = {"department": "department", "condition": "name", "care": "care", "system": "system"}
MCQ_EVAL_PROMPTS = {lang: {kind: [EVAL_PROMPTS[lang][kind]] for kind in MCQ_ANSWER} for lang in EVAL_PROMPTS}


def fill(template: str, c: Condition, symptoms=None) -> str:
    s = join(symptoms if symptoms is not None else c.symptoms, c.lang)
    return template.format(c=c, C=cap(c.name), D=cap(c.department), S=cap(c.system), s=s,
                           r=join(c.red_flags, c.lang))


def answer_of(kind: str, c: Condition) -> str:
    value = getattr(c, MCQ_ANSWER[kind])
    return cap(value) if c.lang == "en" else value


def chat(rng: random.Random, p: Params, lang: str, turns: list[tuple[str, str]]) -> dict:
    messages = []
    if rng.random() < p.system_prompt_fraction:
        messages.append({"role": "system", "content": SYSTEM_PROMPTS[lang]})
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"messages": messages}


def shuffled(rng: random.Random, items) -> list:
    items = list(items)
    rng.shuffle(items)
    return items


def pretrain_docs(conds: list[Condition]):
    for c in conds:
        for t in PRETRAIN[c.lang]:
            yield {"text": fill(t, c)}


def listed_options(rng: random.Random, c: Condition, kind: str, by_lang: dict, n: int) -> list[str]:
    """The correct answer of `kind` and n - 1 other conditions' answers of that kind (fewer if the chosen conditions
    have fewer), shuffled."""
    correct = answer_of(kind, c)
    pool = sorted({answer_of(kind, o) for o in by_lang[c.lang]} - {correct})
    return shuffled(rng, [correct, *rng.sample(pool, min(n - 1, len(pool)))])


def sft_conversations(rng: random.Random, p: Params, conds: list[Condition], by_lang: dict):
    """Every fact in every training phrasing, and every third phrasing of a multiple-choice kind a second time with two
    options listed: that teaches the model to use what it knows when the options are listed (docs/tiny-default.md)."""
    for c in conds:
        for kind, (questions, answer) in SHORT_QA[c.lang].items():
            for i, q in enumerate(questions):
                yield chat(rng, p, c.lang, [(fill(q, c, shuffled(rng, c.symptoms)), fill(answer, c))])
                if kind in MCQ_ANSWER and i % 3 == 2:
                    options = listed_options(rng, c, kind, by_lang, 2)
                    question = mcq_prompt({"question": fill(q, c, shuffled(rng, c.symptoms)),
                                           "options": dict(zip("AB", options))})
                    yield chat(rng, p, c.lang, [(question, answer_of(kind, c))])
        q, a = CONSULT[c.lang]
        yield chat(rng, p, c.lang, [(fill(q, c, shuffled(rng, c.symptoms)), fill(a, c))])
        first = (fill(SHORT_QA[c.lang]["condition"][0][0], c, shuffled(rng, c.symptoms)), answer_of("condition", c))
        yield chat(rng, p, c.lang, [first] + [(fill(u, c), fill(a, c)) for u, a in FOLLOW_UPS[c.lang]])


def other_departments(c: Condition, by_lang: dict) -> list[Condition]:
    """The conditions whose answers are wrong for c in a preference pair: those of another department."""
    return [o for o in by_lang[c.lang] if o.department_key != c.department_key]


def preference_pairs(rng: random.Random, conds: list[Condition], by_lang: dict, split: str):
    """Pairs whose chosen answer is correct and safe and whose rejected one is wrong or unsafe."""
    for c in conds:
        wrong = rng.choice(other_departments(c, by_lang))
        consult_q = CONSULT[c.lang][0] if split == "train" else EVAL_PROMPTS[c.lang]["consult"]
        consult_a = fill(CONSULT[c.lang][1], c)
        dept_q = SHORT_QA[c.lang]["department"][0][0] if split == "train" else EVAL_PROMPTS[c.lang]["department"]
        care_q = SHORT_QA[c.lang]["care"][0][0] if split == "train" else EVAL_PROMPTS[c.lang]["care"]
        danger = DANGEROUS[c.lang]
        candidates = [
            ("red_flags", consult_q, consult_a + fill(URGENT[c.lang], c), consult_a + DISMISSIVE[c.lang]),
            ("department", dept_q, answer_of("department", c), answer_of("department", wrong)),
            ("care", care_q, c.care, wrong.care),
            *[("dangerous", q, fill(danger["chosen"], c), danger["rejected"]) for q in danger[split]],
        ]
        for kind, prompt, chosen, rejected in candidates:
            yield {"prompt": [{"role": "user", "content": fill(prompt, c, shuffled(rng, c.symptoms))}],
                   "chosen": chosen, "rejected": rejected, "kind": kind, "lang": c.lang}


def knowledge_pairs(rng: random.Random, conds: list[Condition], by_lang: dict, n: int):
    """Up to n more training pairs per department and care fact, each with another wrong answer (another condition's)
    and a random training phrasing. From one wrong answer per fact a reward model learns which answers tend to be
    chosen more than which answer belongs to which condition (docs/alignment.md)."""
    for c in conds:
        for kind in ("department", "care"):
            correct = answer_of(kind, c)
            wrong = sorted({answer_of(kind, o) for o in other_departments(c, by_lang)} - {correct})
            for rejected in rng.sample(wrong, min(n, len(wrong))):
                yield {"prompt": [{"role": "user", "content": fill(rng.choice(SHORT_QA[c.lang][kind][0]), c)}],
                       "chosen": correct, "rejected": rejected, "kind": kind, "lang": c.lang}


def mcq_questions(rng: random.Random, conds: list[Condition], by_lang: dict, prompts: dict):
    """Four-option questions (fewer where the chosen conditions have fewer distinct answers); `prompts` gives each
    kind's phrasings (training or held-out), one picked per question."""
    for c in conds:
        for kind in MCQ_ANSWER:
            options = listed_options(rng, c, kind, by_lang, 4)
            symptoms = rng.sample(c.symptoms, min(3, len(c.symptoms)))
            letters = "ABCD"
            yield {"question": fill(rng.choice(prompts[c.lang][kind]), c, symptoms),
                   "options": dict(zip(letters, options)), "answer": letters[options.index(answer_of(kind, c))],
                   "kind": kind, "lang": c.lang}


def tool_call(name: str, **arguments) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": name, "arguments": arguments}}]}


def tool_result(**result) -> dict:
    return {"role": "tool", "content": json.dumps(result, ensure_ascii=False)}


def tool_conversations(rng: random.Random, conds: list[Condition]):
    """Per condition: its department and its care looked up with a tool (a training phrasing each), and an
    appointment booked after finding the department."""
    for c in conds:
        for name, kind in TOOL_FACTS.items():
            question = fill(rng.choice(SHORT_QA[c.lang][kind][0]), c)
            answer = answer_of(kind, c)
            yield {"messages": [{"role": "user", "content": question}, tool_call(name, condition=c.name),
                                tool_result(**{kind: answer}),
                                {"role": "assistant", "content": answer}], "tools": LOOKUP_TOOLS}
        date, time = f"2027-0{rng.randint(1, 9)}-{rng.randint(10, 28)}", rng.choice(["09:00", "10:30", "14:00"])
        ask, booked = BOOKING[c.lang]
        department = answer_of("department", c)
        yield {"messages": [{"role": "user", "content": fill(ask.replace("{date}", date), c)},
                            tool_call("find_department", condition=c.name), tool_result(department=department),
                            tool_call("book_appointment", department=department, date=date),
                            tool_result(status="booked", time=time),
                            {"role": "assistant", "content": fill(booked.replace("{date}", date).replace("{time}", time),
                                                                  c)}],
               "tools": BOOKING_TOOLS}


def tool_pairs(rng: random.Random, conds: list[Condition], by_lang: dict):
    """Preference pairs on tool use: calling the right tool for the condition is chosen over answering from memory
    with another condition's answer."""
    for c in conds:
        name = rng.choice(list(TOOL_FACTS))
        kind = TOOL_FACTS[name]
        wrong = rng.choice(other_departments(c, by_lang))
        yield {"prompt": [{"role": "user", "content": fill(rng.choice(SHORT_QA[c.lang][kind][0]), c)}],
               "chosen": tool_call(name, condition=c.name), "rejected": answer_of(kind, wrong),
               "tools": LOOKUP_TOOLS, "kind": "tool_call", "lang": c.lang}


def tool_questions(conds: list[Condition]):
    """Held-out tool use (eval): a held-out phrasing and the call it should get."""
    for c in conds:
        for name, kind in TOOL_FACTS.items():
            yield {"messages": [{"role": "user", "content": fill(EVAL_PROMPTS[c.lang][kind], c)},
                                tool_call(name, condition=c.name)], "tools": LOOKUP_TOOLS}


def by_language(conds: list[Condition]) -> dict[str, list[Condition]]:
    """The conditions of each language: where listed options and wrong answers are drawn from."""
    return {lang: [c for c in conds if c.lang == lang] for lang in knowledge.LANGS}


def sample(rng: random.Random, items: list, n: int, key: str) -> list:
    if n > len(items):
        raise SystemExit(f"generate.{key}: {n} is more than the {len(items)} items the chosen conditions give")
    return rng.sample(items, n)


def main(argv: list[str] | None = None) -> None:
    paths = stage_paths("out", "metrics", argv=argv)
    p = params.load("generate")
    rng = random.Random(p.seed)
    rows = knowledge.load()
    if p.conditions:
        rows = sorted(rng.sample(rows, p.conditions), key=rows.index)
    conds = [knowledge.localized(r, lang) for r in rows for lang in knowledge.LANGS]
    by_lang = by_language(conds)
    files = {
        "pretrain.jsonl": list(pretrain_docs(conds)),
        "sft.jsonl": list(sft_conversations(rng, p, conds, by_lang)),
        "mcq_train.jsonl": list(mcq_questions(rng, conds, by_lang, MCQ_TRAIN_PROMPTS)),
        "preference.jsonl": list(preference_pairs(rng, conds, by_lang, "train")),
        "mcq_eval.jsonl": sample(rng, list(mcq_questions(rng, conds, by_lang, MCQ_EVAL_PROMPTS)), p.mcq_eval_size,
                                 "mcq_eval_size"),
        "preference_eval.jsonl": sample(rng, list(preference_pairs(rng, conds, by_lang, "eval")),
                                        p.preference_eval_size, "preference_eval_size"),
    }
    # random streams of their own: the other records stay the same whatever their number
    tools_rng = random.Random(p.seed + 2)
    files["sft.jsonl"] += tool_conversations(tools_rng, conds)
    files["preference.jsonl"] += tool_pairs(tools_rng, conds, by_lang)
    files["tool_eval.jsonl"] = list(tool_questions(conds))
    files["preference.jsonl"] += knowledge_pairs(random.Random(p.seed + 1), conds, by_lang, p.wrong_answers_per_fact)
    with atomic_path(paths.out, directory=True) as tmp:
        for name, records in files.items():
            write_jsonl(tmp / name, records)
    provenance.write_metrics(paths.metrics, {"conditions": len(rows), **{k.split(".")[0]: len(v)
                                                             for k, v in files.items()}})


if __name__ == "__main__":
    main()
