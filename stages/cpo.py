"""Stage `preference@cpo`: contrastive preference optimisation (trl.experimental.cpo) from the SFT model
(params.yaml `preference.cpo`); `loss_type: simpo` with `cpo_alpha: 0` is SimPO.

Like ORPO, CPO needs no reference model: a preference loss on the policy's own log-probabilities of chosen over
rejected, plus `cpo_alpha` times the SFT loss on the chosen answer.
"""
from dataclasses import dataclass
from typing import Literal

from medforge import params
from medforge.modeling import load_tokenizer, model_params
from medforge.paths import TRAINING, stage_paths
from medforge.preference import HeldoutPairs, PreferenceParams, pair_datasets
from medforge.train import TrainingRun, load_trainable, peft_config, training_args


@dataclass
class Params(PreferenceParams):
    loss_type: Literal["sigmoid", "hinge", "ipo", "simpo", "alphapo"]
    cpo_alpha: float  # weight of the SFT loss on the chosen answer (0 with simpo: SimPO)
    simpo_gamma: float  # SimPO's target reward margin


def main() -> None:
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    p, mp = params.load("cpo"), model_params()
    files = stage_paths("train", "validation", *TRAINING)
    run = TrainingRun("cpo", p, files)
    tokenizer = load_tokenizer(p.init, mp)
    train, validation, order = pair_datasets("cpo", p, tokenizer, files, run.output_dir, tokenize=False)
    args = CPOConfig(**training_args(p, run.output_dir), **order, max_length=p.max_length, beta=p.beta,
                     loss_type=p.loss_type, cpo_alpha=p.cpo_alpha, simpo_gamma=p.simpo_gamma)
    trainer = CPOTrainer(model=load_trainable(p, mp), args=args, train_dataset=train, eval_dataset=validation,
                         processing_class=tokenizer, peft_config=peft_config(p), callbacks=run.callbacks)
    heldout = HeldoutPairs(p, tokenizer, trainer.model)
    metrics = run.train(trainer)
    metrics |= heldout.after(trainer, examples=len(train))
    run.save(trainer, metrics, data=[files.train, files.validation])


if __name__ == "__main__":
    main()
