"""Stage `preference@kto`: Kahneman-Tversky optimisation from the SFT model (params.yaml `preference.kto`).

KTO learns from single answers labelled desirable or undesirable: each preference pair becomes two examples
(chosen: desirable, rejected: undesirable; TRL's unpair_preference_dataset).
"""
from dataclasses import dataclass

from medforge import params
from medforge.modeling import load_tokenizer, model_params
from medforge.paths import TRAINING, stage_paths
from medforge.preference import HeldoutPairs, ReferenceParams, pair_datasets, reference_model
from medforge.train import TrainingRun, load_trainable, peft_config, training_args


@dataclass
class Params(ReferenceParams):
    desirable_weight: float
    undesirable_weight: float
    paired = False  # single answers
    chunked_logprobs = True  # TRL 1.16's KTO


def main() -> None:
    from trl import KTOConfig, KTOTrainer
    p, mp = params.load("kto"), model_params()
    files = stage_paths("train", "validation", *TRAINING)
    run = TrainingRun("kto", p, files)
    tokenizer = load_tokenizer(p.init, mp)
    train, validation, order = pair_datasets("kto", p, tokenizer, files, run.output_dir, tokenize=False,
                                                unpaired=True)
    args = KTOConfig(**training_args(p, run.output_dir), **order, max_length=p.max_length,
                     beta=p.beta, desirable_weight=p.desirable_weight, undesirable_weight=p.undesirable_weight,
                     precompute_ref_log_probs=p.precompute_ref_log_probs)
    trainer = KTOTrainer(model=load_trainable(p, mp), ref_model=reference_model(p, mp), args=args,
                         train_dataset=train, eval_dataset=validation, processing_class=tokenizer,
                         peft_config=peft_config(p), callbacks=run.callbacks)
    heldout = HeldoutPairs(p, tokenizer, trainer.model)
    metrics = run.train(trainer)
    metrics |= heldout.after(trainer, examples=len(train))
    run.save(trainer, metrics, data=[files.train, files.validation])


if __name__ == "__main__":
    main()
