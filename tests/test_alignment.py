"""What the preference trainers train on, token by token; the GRPO rewards; MedicalGPT's DPO data training."""
import json
import math
from pathlib import Path

import pytest
import torch

from medforge.formats import to_preference
from medforge import params
from medforge.modeling import load_tokenizer
from medforge.preference import (completion_ids, implicit_reward_metrics, pair_length, pair_records, to_trl,
                                 tokenized, tokenized_dpo_trainer)
from medforge.rewards import answer_format, brevity, chosen_option, correctness
from medforge.train import length_grouped, load_trainable, peft_config, training_args

FP32 = params.load("model", dtype="float32")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "medicalgpt"
PAIRS = [
    {"prompt": [{"role": "system", "content": "You are a careful medical assistant."},
                {"role": "user", "content": "I have chest pain and shortness of breath. What should I do?"}],
     "chosen": "Go to the emergency department now.", "rejected": "There is no need to see a doctor."},
    {"prompt": [{"role": "user", "content": "高血压应该挂哪个科？"},
                {"role": "assistant", "content": "心内科"},
                {"role": "user", "content": "我可以自己把药加倍吗？"}],
     "chosen": "不可以，请先咨询医生。", "rejected": "可以。"},
]


def records(p, tokenizer, pairs, directory, tokenize, grouped=False):
    """`pairs` as a stage reads them: a prepared file, memory-mapped (medforge.preference.pair_records)."""
    path = directory / f"pairs-{tokenize}-{grouped}.jsonl"
    path.write_text("".join(json.dumps(pair, ensure_ascii=False) + "\n" for pair in pairs), encoding="utf-8")
    return pair_records("test", p, tokenizer, path, directory / "datasets", tokenize, grouped)


def dpo_trainer(model_dir, tmp_path, pairs, max_steps=1):
    from trl import DPOConfig, DPOTrainer
    p = params.load("dpo", init=str(model_dir), finetuning="lora", max_steps=max_steps, batch_size=2,
                    learning_rate=1e-3, logging_steps=1)
    args = DPOConfig(**training_args(p, str(tmp_path)), max_length=512)
    tokenizer = load_tokenizer(model_dir, FP32)
    return DPOTrainer(model=load_trainable(p, FP32), args=args, processing_class=tokenizer, peft_config=peft_config(p),
                      train_dataset=records(p, tokenizer, pairs, tmp_path, False))


def test_dpo_batch_masks_the_prompt_and_labels_exactly_the_answers(tiny_model_dir, tmp_path):
    tok = load_tokenizer(tiny_model_dir, FP32)
    trainer = dpo_trainer(tiny_model_dir, tmp_path, PAIRS)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    n = len(PAIRS)
    for i, pair in enumerate(PAIRS):
        prompt = tok(tok.apply_chat_template(pair["prompt"], tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False)["input_ids"]
        for row, key in ((i, "chosen"), (n + i, "rejected")):
            ids = batch["input_ids"][row][batch["attention_mask"][row].bool()].tolist()
            mask = batch["completion_mask"][row][batch["attention_mask"][row].bool()].tolist()
            answer = [t for t, m in zip(ids, mask) if m]
            assert ids[:len(prompt)] == prompt and not any(mask[:len(prompt)])   # whole prompt, never trained on
            assert mask == [0] * len(prompt) + [1] * (len(ids) - len(prompt))    # then only the answer
            assert tok.decode(answer) == pair[key] + "<|im_end|>\n"            # the answer and its end of turn
            assert completion_ids(tok, pair["prompt"], pair[key]) == (prompt, answer)  # held-out scoring agrees


def test_pair_length_is_the_width_a_pair_is_padded_to(tiny_model_dir, tmp_path):
    tok = load_tokenizer(tiny_model_dir, FP32)
    trainer = dpo_trainer(tiny_model_dir, tmp_path, PAIRS)
    for i, pair in enumerate(PAIRS):  # what length grouping sorts by: the longer of chosen and rejected, in tokens
        assert trainer.data_collator([trainer.train_dataset[i]])["input_ids"].shape[1] == pair_length(tok, pair)


def test_dpo_step_moves_only_the_adapter_and_logs_rewards(tiny_model_dir, tmp_path):
    trainer = dpo_trainer(tiny_model_dir, tmp_path, PAIRS * 4, max_steps=2)
    before = {n: t.detach().clone() for n, t in trainer.model.named_parameters()}
    trainer.train()
    moved = {n for n, t in trainer.model.named_parameters() if not torch.equal(t, before[n])}
    assert moved and all("lora_" in n for n in moved)
    logged = [e for e in trainer.state.log_history if "rewards/accuracies" in e]
    assert logged and all(math.isfinite(e["loss"]) for e in logged)


def test_the_dpo_stage_tokenizes_pairs_as_trl_does(tiny_model_dir, tmp_path):
    tok = load_tokenizer(tiny_model_dir, FP32)
    trl_rows = dpo_trainer(tiny_model_dir, tmp_path, PAIRS).train_dataset  # TRL's own tokenization
    assert [tokenized(tok, pair) for pair in PAIRS] == \
        [{k: row[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for row in trl_rows]


# MedicalGPT's tool DPO format (data/reward/toolcall_dpo_zh_demo.jsonl): the chosen answer calls the tool, written
# "Action: name\nAction Input: {...}"; in the second pair the prompt carries the call and its result.
FIND = {"name": "find_department", "description": "诊治某种疾病的科室",
        "parameters": {"type": "object", "properties": {"condition": {"type": "string"}}, "required": ["condition"]}}
TOOL_PAIRS = [
    {"conversations": [{"from": "human", "value": "高血压应该挂哪个科？"}], "tools": json.dumps([FIND]),
     "chosen": 'Action: find_department\nAction Input: {"condition": "高血压"}\n', "rejected": "随便挂一个科就行。"},
    {"conversations": [{"from": "human", "value": "高血压应该挂哪个科？"},
                       {"from": "function_call", "value": '{"name": "find_department", "arguments": {"condition": "高血压"}}'},
                       {"from": "observation", "value": '{"department": "心内科"}'}],
     "tools": json.dumps([FIND]), "chosen": "请挂心内科。", "rejected": "请挂骨科。"},
]
CALL_TEXT = '<tool_call>\n{"name": "find_department", "arguments": {"condition": "高血压"}}\n</tool_call><|im_end|>\n'


def test_tool_calling_pairs_train_through_dpo(tiny_model_dir, tmp_path):
    tok = load_tokenizer(tiny_model_dir, FP32)
    pairs = [to_preference(r) for r in TOOL_PAIRS]
    assert pairs[0]["chosen"]["tool_calls"][0]["function"] == {"name": "find_department",
                                                                "arguments": {"condition": "高血压"}}
    rows = [tokenized(tok, pair) for pair in pairs]
    # token by token: the answers are trained on, the tools, the call in the prompt and its result are not
    assert [tok.decode(r["chosen_ids"]) for r in rows] == [CALL_TEXT, "请挂心内科。<|im_end|>\n"]
    prompt = tok.decode(rows[1]["prompt_ids"])
    assert '"name": "find_department", "description"' in prompt and '<|im_start|>tool\n{"department": "心内科"}' in prompt
    assert prompt.endswith("<|im_start|>assistant\n") and prompt.count("<tool_call>") == 1
    p = params.load("dpo", init=str(tiny_model_dir), finetuning="lora", max_steps=2, batch_size=2,
                    learning_rate=1e-3, logging_steps=1)
    from trl import DPOConfig
    trainer = tokenized_dpo_trainer()(
        model=load_trainable(p, FP32), args=DPOConfig(**training_args(p, str(tmp_path)), max_length=512),
        train_dataset=records(p, tok, pairs * 2, tmp_path, True), processing_class=tok, peft_config=peft_config(p))
    trainer.train()
    assert [e for e in trainer.state.log_history if "rewards/accuracies" in e]
    # the conversational form the reward model, ORPO and KTO take leaves the tool-calling pairs out
    assert records(p, tok, pairs + PAIRS, tmp_path, False)["chosen"] == [
        [{"role": "assistant", "content": pair["chosen"]}] for pair in PAIRS]
    with pytest.raises(SystemExit, match="tool-calling pairs .* train through DPO only"):
        to_trl(pairs[0])


def test_implicit_reward_metrics():
    before = (torch.tensor([-10.0, -10.0, -5.0]), torch.tensor([-10.0, -10.0, -5.0]))
    after = (torch.tensor([-8.0, -12.0, -5.0]), torch.tensor([-11.0, -11.0, -4.0]))
    pairs = [{"kind": "care"}, {"kind": "care"}, {"kind": "dangerous"}]
    m = implicit_reward_metrics(pairs, before, after)
    assert m["heldout_reward_accuracy"] == pytest.approx(1 / 3)
    assert m["heldout_reward_margin"] == pytest.approx((3 - 1 - 1) / 3)
    assert m["heldout_reward_accuracy_by_kind"] == {"care": 0.5, "dangerous": 0.0}
    assert "heldout_reward_accuracy_by_kind" not in implicit_reward_metrics([{}, {}, {}], before, after)


KEYS, OPTIONS = ["A", "B", "C", "D"], ["Cardiology", "Dermatology", "Pediatric cardiology", "Neurology"]


@pytest.mark.parametrize("reply, expected", [
    ("B", "B"), ("B.", "B"), ("(c)", "C"), ("D. Neurology", "D"), ("Dermatology", "B"), ("dermatology.", "B"),
    ("Pediatric cardiology", "C"),          # exact text wins over the option it contains
    ("Cardiology", "A"),
    ("You should see Neurology first.", "D"),
    ("Cardiology or Neurology", None),      # two options named: no answer
    ("Back pain clinic", None),             # a word starting with a letter is not a letter answer
    ("A doctor in Neurology", "D"),
    ("Neurolgy", "D"), ("Dermatolgy.", "B"),  # a misspelt option still counts as the option meant
    ("Orthopedics", None),                    # nothing close enough
    ("", None),
])
def test_chosen_option(reply, expected):
    assert chosen_option(reply, KEYS, OPTIONS) == expected


def test_rewards_score_each_completion():
    completions = [[{"role": "assistant", "content": c}] for c in
                   ["Neurology", "D", "I think Neurology is right here.", "Cardiology", "Neurology, Cardiology"]]
    n = len(completions)
    cols = dict(keys=[KEYS] * n, options=[OPTIONS] * n, answer=["D"] * n)
    assert correctness(completions, **cols) == [1.0, 1.0, 1.0, 0.0, 0.0]
    fmt = answer_format(completions, **cols)
    assert fmt[:2] == [1.0, 1.0] and 0 < fmt[2] < 0.6 and fmt[3:] == [1.0, 0.0]
    assert 0.9 < answer_format(["Neurolgy"], [KEYS], [OPTIONS])[0] < 1
    assert brevity(["x" * 10, "x" * 40, "x" * 100, "x" * 160, "x" * 500], target_chars=40) == [
        1.0, 1.0, pytest.approx(0.5), 0.0, 0.0]


@pytest.mark.parametrize("match, answer, replies, expected", [
    ("numeric", "72", ["72", "She sold 72 clips.", "48 + 24 = 72", "72.0", "７２", "The answer is 71.", "72 or 73",
                       "seventy-two", ""], [1, 1, 1, 1, 1, 0, 0, 0, 0]),
    ("numeric", "1250", ["1,250 mg", "1250.5", "-1250"], [1, 0, 0]),
    ("exact", "心内科", ["心内科", "心内科。", " 心内科 ", "心内科或神经科", "神经科"], [1, 1, 1, 0, 0]),
    ("exact", "Cardiology", ["cardiology.", "CARDIOLOGY", "Cardiology, probably"], [1, 1, 0]),
])
def test_correctness_by_each_questions_rule(match, answer, replies, expected):
    n = len(replies)
    assert correctness(replies, [[]] * n, [[]] * n, [answer] * n, [match] * n) == expected


def test_format_rewards_a_bare_answer():
    assert answer_format(["72", "It is 72.", "no idea"], [[]] * 3, [[]] * 3, ["72"] * 3, ["numeric"] * 3) == \
        [1.0, 0.5, 0.0]
    exact = answer_format(["心内科", "心内科吧", "骨科"], [[]] * 3, [[]] * 3, ["心内科"] * 3, ["exact"] * 3)
    assert exact[0] == 1.0 and 0.5 < exact[1] < 1.0 and exact[2] < 0.5


def test_grpo_trains_on_a_fixed_pool_drawn_with_its_seed(tmp_path):
    from stages.grpo import training_rows
    path = tmp_path / "mcq.jsonl"
    path.write_text("".join(json.dumps({"question": f"Q{i}?", "options": {"A": "yes", "B": "no"}, "answer": "A"}) + "\n"
                            for i in range(10)), encoding="utf-8")

    def pool(**kw):
        p = params.load("grpo", prompts=str(path), **{"num_prompts": 0, **kw})
        return [r["prompt"][0]["content"].split("?")[0] for r in training_rows(p)]

    assert pool() == [f"Q{i}" for i in range(10)]
    assert len(set(pool(num_prompts=4, seed=1))) == 4 and pool(num_prompts=4, seed=1) == pool(num_prompts=4, seed=1)
    assert pool(num_prompts=4, seed=1) != pool(num_prompts=4, seed=2)
    with pytest.raises(SystemExit, match="grpo.num_prompts: 11 is more than the 10 prompts in"):
        pool(num_prompts=11)


@pytest.mark.skipif(not SHARED.exists(), reason="../shared sample data not present")
def test_medicalgpt_dpo_data_imports_and_trains(tiny_model_dir, tmp_path):
    with open(SHARED / "dpo_zh_500.jsonl", encoding="utf-8") as f:
        pairs = [to_preference(json.loads(line)) for line in f if line.strip()]
    assert len(pairs) == 500
    trainer = dpo_trainer(tiny_model_dir, tmp_path, pairs[:16], max_steps=3)
    result = trainer.train()
    assert result.global_step == 3 and math.isfinite(result.training_loss)


def test_reward_trend_compares_first_and_last_tenth():
    from medforge.rl import reward_trend
    history = [{"reward": float(i), "kl": 0.1} for i in range(20)] + [{"loss": 1.0}]
    trend = reward_trend(history)
    assert trend["reward_first_10pct"] == 0.5 and trend["reward_last_10pct"] == 18.5
    assert trend["reward_gain"] == 18.0 and trend["kl_mean"] == pytest.approx(0.1)
    assert reward_trend([{"loss": 1.0}]) == {}


def test_pair_records_are_the_pairs_tokenized_and_length_grouped(tiny_model_dir, tmp_path):
    tok = load_tokenizer(tiny_model_dir, FP32)
    p = params.load("dpo", batch_size=2, gradient_accumulation_steps=1, dataset_num_proc=2)
    pairs = [{**pair, "chosen": pair["chosen"] + " " + "x" * n} for n in range(6) for pair in PAIRS]
    assert records(p, tok, pairs, tmp_path, True).to_list() == [tokenized(tok, pair) for pair in pairs]
    grouped = records(p, tok, pairs, tmp_path, True, grouped=True).to_list()
    lengths = [pair_length(tok, pair) for pair in pairs]
    assert grouped == [tokenized(tok, pairs[i]) for i in length_grouped(list(range(12)), lengths, 2, p.seed)]
