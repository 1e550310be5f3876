"""Stage `grpo`: group relative policy optimisation of the SFT model on questions with checkable answers (params.yaml
`grpo`).

By default the prompts are the knowledge table's multiple-choice questions (`prompts`: the generated training
phrasings, never the held-out ones). Your own questions are imported by `prepare` (`data.questions`: MedicalGPT's
{"question", "answer"}, GSM8K, multiple choice) into data/prepared/questions_{train,validation}.jsonl; point
`prompts` and `heldout` there. Each question carries how its answer is checked (option letter, numeric, normalised
exact match: medforge/formats.to_question); `accuracy` overrides that for the whole dataset. `num_prompts` trains on
a fixed pool, so the reward curve compares like with like. Rewards (medforge/rewards.py), weighted by
`reward_weights`: correctness, answer format, brevity, and optionally a reward model's score (`reward_model`, weight
key `rm`).

Metrics: reward curves (dvclive), mean reward over the first and last 10% of steps, and greedy answer accuracy
on held-out questions (`heldout`) before and after training.
"""
import random
from dataclasses import dataclass
from functools import partial, update_wrapper
from typing import Literal

from medforge import params
from medforge.formats import mcq_prompt, read_canonical, to_question
from medforge.modeling import generate_replies, load_model, load_tokenizer, model_params
from medforge.paths import TRAINING, stage_paths
from medforge.rewards import REWARDS, correctness
from medforge.rl import RLParams, reward_trend, rl_args, scored
from medforge.train import TrainingRun, load_trainable, peft_config


@dataclass
class Params(RLParams):
    prompts: str
    num_prompts: int  # train on this many of them, drawn with `seed` (0 = all)
    heldout: str
    reward_weights: dict[str, float]
    target_chars: int  # brevity: full reward up to this many characters
    reward_model: str | None  # e.g. models/rm (then also add it to the grpo deps in dvc.yaml), weight key `rm`
    accuracy: Literal["auto", "choice", "numeric", "exact"]  # how answers are checked; auto: each question's own


def as_rows(path: str, accuracy: str = "auto") -> list[dict]:
    rows = []
    for q in read_canonical(path, to_question):
        match = q["match"] if accuracy == "auto" else accuracy
        if match == "choice" and "options" not in q:
            raise SystemExit(f"grpo.accuracy: choice, but {path} has questions without options")
        options = q.get("options", {})
        rows.append({"prompt": [{"role": "user", "content": mcq_prompt(q) if options else q["question"]}],
                     "keys": list(options), "options": list(options.values()), "answer": q["answer"],
                     "match": match})
    return rows


def training_rows(p: Params) -> list[dict]:
    rows = as_rows(p.prompts, p.accuracy)
    if p.num_prompts > len(rows):
        raise SystemExit(f"grpo.num_prompts: {p.num_prompts} is more than the {len(rows)} prompts in {p.prompts}")
    return random.Random(p.seed).sample(rows, p.num_prompts) if p.num_prompts else rows


def reward_functions(p: Params, mp):
    """(functions, weights, processing classes) in the order TRL wants them."""
    unknown = set(p.reward_weights) - set(REWARDS) - {"rm"}
    if unknown:
        raise SystemExit(f"grpo.reward_weights: unknown reward {sorted(unknown)[0]!r} (known: {[*REWARDS, 'rm']})")
    if "rm" in p.reward_weights and not p.reward_model:
        raise SystemExit("grpo.reward_weights.rm is set but grpo.reward_model is null")
    funcs, weights, tokenizers = [], [], []
    for name, weight in p.reward_weights.items():
        if name == "rm":
            funcs.append(load_model(p.reward_model, mp, head="reward").eval())
            tokenizers.append(load_tokenizer(p.reward_model, mp))
        else:
            func = REWARDS[name]
            if name == "brevity":
                func = update_wrapper(partial(func, target_chars=p.target_chars), func)
            funcs.append(func)
            tokenizers.append(None)
        weights.append(weight)
    return funcs, weights, tokenizers


def main() -> None:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    p, mp = params.load("grpo"), model_params()
    files = stage_paths(*TRAINING)
    run = TrainingRun("grpo", p, files)
    tokenizer = load_tokenizer(p.init, mp)
    heldout = as_rows(p.heldout, p.accuracy)[: p.heldout_size]

    def heldout_accuracy(model) -> float:
        replies = generate_replies(model, tokenizer, [r["prompt"] for r in heldout], p.max_completion_length)
        scores = correctness(replies, *([r[k] for r in heldout] for k in ("keys", "options", "answer", "match")))
        return sum(scores) / len(scores)

    funcs, weights, tokenizers = reward_functions(p, mp)
    trainer = GRPOTrainer(model=load_trainable(p, mp), reward_funcs=funcs, reward_processing_classes=tokenizers,
                          args=GRPOConfig(**rl_args(p, run.output_dir), reward_weights=weights),
                          train_dataset=Dataset.from_list(training_rows(p)), processing_class=tokenizer,
                          peft_config=peft_config(p), callbacks=run.callbacks)
    before = scored(trainer, heldout_accuracy)
    metrics = run.train(trainer)
    metrics |= {**reward_trend(trainer.state.log_history), "heldout_accuracy_before": before,
                "heldout_accuracy_after": scored(trainer, heldout_accuracy)}
    run.save(trainer, metrics, data=[p.prompts])


if __name__ == "__main__":
    main()
