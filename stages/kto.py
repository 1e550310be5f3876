"""Stage `kto`: Kahneman-Tversky optimisation from the SFT model (params.yaml `kto`).

KTO learns from single answers labelled desirable or undesirable: each preference pair becomes two examples
(chosen: desirable, rejected: undesirable; TRL's unpair_preference_dataset).
"""
from dataclasses import dataclass

from medforge import params
from medforge.modeling import load_model, model_params
from medforge.preference import PreferenceParams, run_preference
from medforge.train import load_trainable, peft_config, training_args


@dataclass
class Params(PreferenceParams):
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    precompute_ref_log_probs: bool = False


def main() -> None:
    p = params.load("kto", Params)
    mp = model_params()

    def make_trainer(train, validation, tokenizer, output_dir, callbacks):
        from trl import KTOConfig, KTOTrainer
        args = KTOConfig(**training_args(p, output_dir), max_length=p.max_length, beta=p.beta,
                         desirable_weight=p.desirable_weight, undesirable_weight=p.undesirable_weight,
                         precompute_ref_log_probs=p.precompute_ref_log_probs)
        frozen_copy = p.finetuning == "full" and not p.precompute_ref_log_probs
        ref_model = load_model(p.init, mp) if frozen_copy else None
        return KTOTrainer(model=load_trainable(p, mp), ref_model=ref_model, args=args,
                          train_dataset=train, eval_dataset=validation, processing_class=tokenizer,
                          peft_config=peft_config(p), callbacks=callbacks)

    run_preference("kto", p, make_trainer, unpaired=True)


if __name__ == "__main__":
    main()
