"""Stage `rm`: a reward model (sequence-classification head, one output) trained on preference pairs from the
SFT model (params.yaml `rm`). The output is always a standalone model, LoRA merged, ready for the `ppo` stage.

Held-out metrics: pairwise accuracy (score of chosen > rejected) and mean margin on `rm.heldout`.
"""
from dataclasses import dataclass

from medforge import params
from medforge.modeling import load_tokenizer, model_params
from medforge.paths import TRAINING, stage_paths
from medforge.preference import PairParams, by_kind, load_pairs, pair_datasets, reward_scores
from medforge.train import TrainingRun, load_trainable, peft_config, training_args, whole_weights


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
    from trl import RewardConfig, RewardTrainer
    p, mp = params.load("rm"), model_params()
    files = stage_paths("train", "validation", *TRAINING)
    run = TrainingRun("rm", p, files)
    tokenizer = load_tokenizer(p.init, mp)
    train, validation, order = pair_datasets("rm", p, tokenizer, files, run.output_dir, tokenize=False)
    args = RewardConfig(**training_args(p, run.output_dir), **order, max_length=p.max_length,
                        center_rewards_coefficient=p.center_rewards_coefficient)
    trainer = RewardTrainer(model=load_trainable(p, mp, head="reward"), args=args, train_dataset=train,
                            eval_dataset=validation, processing_class=tokenizer,
                            peft_config=peft_config(p, task_type="SEQ_CLS"), callbacks=run.callbacks)
    metrics = run.train(trainer)
    with whole_weights(trainer.model):
        metrics |= pairwise_metrics(trainer.model, tokenizer, load_pairs(p.heldout))
    run.save(trainer, metrics, data=[files.train, files.validation], merge_adapter=True)


if __name__ == "__main__":
    main()
