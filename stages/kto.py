"""Stage `kto`: Kahneman-Tversky optimisation from the SFT model (params.yaml `kto`).

KTO learns from single answers labelled desirable or undesirable: each preference pair becomes two examples
(chosen: desirable, rejected: undesirable; TRL's unpair_preference_dataset).
"""
from dataclasses import dataclass

from medforge import params
from medforge.modeling import model_params
from medforge.preference import ReferenceParams, reference_model, run_preference
from medforge.train import load_trainable, peft_config, training_args


@dataclass
class Params(ReferenceParams):
    desirable_weight: float
    undesirable_weight: float


def main() -> None:
    p = params.load("kto")
    mp = model_params()

    def make_trainer(train, validation, tokenizer, output_dir, callbacks):
        from trl import KTOConfig, KTOTrainer
        args = KTOConfig(**training_args(p, output_dir), max_length=p.max_length, beta=p.beta,
                         desirable_weight=p.desirable_weight, undesirable_weight=p.undesirable_weight,
                         precompute_ref_log_probs=p.precompute_ref_log_probs)
        return KTOTrainer(model=load_trainable(p, mp), ref_model=reference_model(p, mp), args=args,
                          train_dataset=train, eval_dataset=validation, processing_class=tokenizer,
                          peft_config=peft_config(p), callbacks=callbacks)

    run_preference("kto", p, make_trainer, unpaired=True)


if __name__ == "__main__":
    main()
