"""Stage `orpo`: odds-ratio preference optimisation (trl.experimental.orpo) from the SFT model (params.yaml `orpo`).

ORPO needs no reference model: an SFT loss on the chosen answer plus `beta` times the log odds ratio of
chosen over rejected.
"""
from medforge import params
from medforge.modeling import model_params
from medforge.preference import run_preference
from medforge.train import load_trainable, peft_config, training_args


def main() -> None:
    p = params.load("orpo")
    mp = model_params()

    def make_trainer(train, validation, tokenizer, output_dir, callbacks):
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer
        args = ORPOConfig(**training_args(p, output_dir), max_length=p.max_length, beta=p.beta)
        return ORPOTrainer(model=load_trainable(p, mp), args=args, train_dataset=train, eval_dataset=validation,
                           processing_class=tokenizer, peft_config=peft_config(p), callbacks=callbacks)

    run_preference("orpo", p, make_trainer)


if __name__ == "__main__":
    main()
