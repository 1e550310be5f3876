"""Stage `preference@orpo`: odds-ratio preference optimisation (trl.experimental.orpo) from the SFT model
(params.yaml `preference.orpo`).

ORPO needs no reference model: an SFT loss on the chosen answer plus `beta` times the log odds ratio of
chosen over rejected.
"""
from medforge import params
from medforge.modeling import load_tokenizer, model_params
from medforge.paths import TRAINING, stage_paths
from medforge.preference import HeldoutPairs, PreferenceParams, pair_datasets
from medforge.train import TrainingRun, load_trainable, peft_config, training_args

Params = PreferenceParams  # its section's schema: beta weighs the odds-ratio term; no reference model


def main() -> None:
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer
    p, mp = params.load("orpo"), model_params()
    files = stage_paths("train", "validation", *TRAINING)
    run = TrainingRun("orpo", p, files)
    tokenizer = load_tokenizer(p.init, mp)
    train, validation, order = pair_datasets("orpo", p, tokenizer, files, run.output_dir, tokenize=False)
    args = ORPOConfig(**training_args(p, run.output_dir), **order, max_length=p.max_length,
                      beta=p.beta)
    trainer = ORPOTrainer(model=load_trainable(p, mp), args=args, train_dataset=train, eval_dataset=validation,
                          processing_class=tokenizer, peft_config=peft_config(p), callbacks=run.callbacks)
    heldout = HeldoutPairs(p, tokenizer, trainer.model)
    metrics = run.train(trainer)
    metrics |= heldout.after(trainer, examples=len(train))
    run.save(trainer, metrics, data=[files.train, files.validation])


if __name__ == "__main__":
    main()
