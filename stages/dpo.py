"""Stage `preference@dpo`: direct preference optimisation of the SFT model (params.yaml `preference.dpo`).

With LoRA/QLoRA the reference model is the policy with its adapter disabled; with full fine-tuning TRL keeps
a frozen copy. `precompute_ref_log_probs` scores the reference once before training instead of every step. Pairs
that call tools train here too: medforge tokenizes every pair under the model's template (medforge.preference).
"""
from dataclasses import dataclass

from medforge import params
from medforge.modeling import load_tokenizer, model_params
from medforge.paths import TRAINING, stage_paths
from medforge.preference import HeldoutPairs, ReferenceParams, pair_datasets, reference_model, tokenized_dpo_trainer
from medforge.train import TrainingRun, load_trainable, peft_config, training_args


@dataclass
class Params(ReferenceParams):
    loss_type: str  # any of TRL's DPO losses: sigmoid, ipo, hinge, robust, apo_zero, ...
    label_smoothing: float
    chunked_logprobs = True  # TRL 1.16's DPO


def make_trainer(p: Params, mp, tokenizer, train, validation, output_dir: str, callbacks, **config):
    """DPO's trainer on pairs tokenized here (pair_datasets); `config`: more DPOConfig fields. `make bench` builds
    this trainer too."""
    from trl import DPOConfig
    args = DPOConfig(**training_args(p, output_dir), max_length=p.max_length, beta=p.beta, loss_type=[p.loss_type],
                     label_smoothing=p.label_smoothing, precompute_ref_log_probs=p.precompute_ref_log_probs, **config)
    return tokenized_dpo_trainer()(model=load_trainable(p, mp), ref_model=reference_model(p, mp), args=args,
                                   train_dataset=train, eval_dataset=validation, processing_class=tokenizer,
                                   peft_config=peft_config(p), callbacks=callbacks)


def main() -> None:
    p, mp = params.load("dpo"), model_params()
    files = stage_paths("train", "validation", *TRAINING)
    run = TrainingRun("dpo", p, files)
    tokenizer = load_tokenizer(p.init, mp)
    train, validation, order = pair_datasets("dpo", p, tokenizer, files, run.output_dir, tokenize=True)
    trainer = make_trainer(p, mp, tokenizer, train, validation, run.output_dir, run.callbacks, **order)
    heldout = HeldoutPairs(p, tokenizer, trainer.model)
    metrics = run.train(trainer)
    metrics |= heldout.after(trainer, examples=len(train))
    run.save(trainer, metrics, data=[files.train, files.validation])


if __name__ == "__main__":
    main()
