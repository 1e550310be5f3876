"""Stage `dpo`: direct preference optimisation of the SFT model on preference pairs (params.yaml `dpo`).

With LoRA/QLoRA the reference model is the policy with its adapter disabled; with full fine-tuning TRL keeps
a frozen copy. `precompute_ref_log_probs` scores the reference once before training instead of every step. Pairs
that call tools train here too: medforge tokenizes every pair under the model's template (medforge.preference).
"""
from dataclasses import dataclass

from medforge import params
from medforge.modeling import model_params
from medforge.preference import ReferenceParams, reference_model, run_preference, tokenized_dpo_trainer
from medforge.train import load_trainable, peft_config, training_args


@dataclass
class Params(ReferenceParams):
    loss_type: str  # any of TRL's DPO losses: sigmoid, ipo, hinge, robust, apo_zero, ...
    label_smoothing: float


def main() -> None:
    p = params.load("dpo")
    mp = model_params()

    def make_trainer(train, validation, tokenizer, output_dir, callbacks):
        from trl import DPOConfig
        args = DPOConfig(**training_args(p, output_dir), max_length=p.max_length, beta=p.beta,
                         loss_type=[p.loss_type], label_smoothing=p.label_smoothing,
                         precompute_ref_log_probs=p.precompute_ref_log_probs)
        return tokenized_dpo_trainer()(model=load_trainable(p, mp), ref_model=reference_model(p, mp), args=args,
                          train_dataset=train, eval_dataset=validation, processing_class=tokenizer,
                          peft_config=peft_config(p), callbacks=callbacks)

    run_preference("dpo", p, make_trainer, tokenize=True)


if __name__ == "__main__":
    main()
