"""Stage `rm`: a reward model (sequence-classification head, one output) trained on preference pairs from the
SFT model (params.yaml `rm`). The output is always a standalone model, LoRA merged, ready for the `ppo` stage.

Held-out metrics: pairwise accuracy (score of chosen > rejected) and mean margin on `rm.heldout`.
"""
from dataclasses import dataclass
from pathlib import Path

from medforge import params
from medforge.modeling import load_tokenizer, model_params
from medforge.paths import TRAINING, stage_paths
from medforge.preference import PairParams, by_kind, grouped_by_length, load_pairs, pair_records, reward_scores
from medforge.train import load_trainable, peft_config, run, training_args


@dataclass
class Params(PairParams):
    center_rewards_coefficient: float | None


def pairwise_metrics(model, tokenizer, pairs: list[dict]) -> dict:
    def scored(key):
        return reward_scores(model, tokenizer, [p["prompt"] + [{"role": "assistant", "content": p[key]}]
                                                for p in pairs])
    margin = scored("chosen") - scored("rejected")
    metrics = {"heldout_accuracy": (margin > 0).float().mean().item(), "heldout_margin": margin.mean().item()}
    if kinds := by_kind(pairs, margin > 0):
        metrics["heldout_accuracy_by_kind"] = kinds
    return metrics


def main() -> None:
    p = params.load("rm")
    files = stage_paths("train", "validation", *TRAINING)
    mp = model_params()
    tokenizer = load_tokenizer(p.init, mp)

    def build(output_dir, callbacks):
        from trl import RewardConfig, RewardTrainer
        grouped = grouped_by_length(p)
        train, validation = (pair_records("rm", p, tokenizer, path, Path(output_dir) / "datasets", False, group)
                             for path, group in ((files.train, grouped), (files.validation, False)))
        args = RewardConfig(**training_args(p, output_dir), max_length=p.max_length,
                            center_rewards_coefficient=p.center_rewards_coefficient,
                            train_sampling_strategy="sequential" if grouped else "random")
        return RewardTrainer(model=load_trainable(p, mp, head="reward"), args=args, train_dataset=train,
                             eval_dataset=validation, processing_class=tokenizer,
                             peft_config=peft_config(p, task_type="SEQ_CLS"), callbacks=callbacks)

    heldout = load_pairs(p.heldout)
    run("rm", p, build, files, [files.train, files.validation],
        report=lambda trainer: pairwise_metrics(trainer.model, tokenizer, heldout), merge_adapter=True)


if __name__ == "__main__":
    main()
