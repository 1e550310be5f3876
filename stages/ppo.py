"""Stage `ppo`: RLHF of the SFT policy against the trained reward model, with a KL penalty (params.yaml `ppo`).

The algorithm is RLOO (REINFORCE Leave-One-Out, TRL's RLOOTrainer), not PPO: TRL removed PPOTrainer in 2026.
The stage keeps MedicalGPT's name `ppo` for the RLHF step. RLOO samples `num_generations` answers per prompt,
scores them with the reward model and uses the mean reward of the other samples as each one's baseline.

Metrics: the reward and KL curves (dvclive), mean reward over the first and last 10% of steps, and the reward
model's mean score of greedy answers to held-out prompts before and after training.
"""
from dataclasses import dataclass

from medforge import params
from medforge.modeling import generate_replies, load_model, load_tokenizer, model_params
from medforge.paths import TRAINING, stage_paths
from medforge.preference import load_pairs, reward_scores, without_tools
from medforge.rl import RLParams, reward_trend, rl_args, scored
from medforge.train import TrainingRun, load_trainable, peft_config


@dataclass
class Params(RLParams):
    reward_model: str
    heldout: str


def prompts_of(pairs: list[dict]) -> list[list[dict]]:
    unique = {str(p["prompt"]): p["prompt"] for p in pairs}
    return list(unique.values())


def main() -> None:
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer
    p, mp = params.load("ppo"), model_params()
    files = stage_paths("train", *TRAINING)  # the prompts of the preference training pairs
    run = TrainingRun("ppo", p, files)
    tokenizer = load_tokenizer(p.init, mp)
    reward_model = load_model(p.reward_model, mp, head="reward").eval()
    reward_tokenizer = load_tokenizer(p.reward_model, mp)
    heldout = prompts_of(load_pairs(p.heldout))[: p.heldout_size]

    def heldout_reward(model) -> float:
        replies = generate_replies(model, tokenizer, heldout, p.max_completion_length)
        conversations = [m + [{"role": "assistant", "content": r}] for m, r in zip(heldout, replies)]
        return reward_scores(reward_model, reward_tokenizer, conversations).mean().item()

    prompts = prompts_of(without_tools("ppo", load_pairs(files.train)))
    trainer = RLOOTrainer(model=load_trainable(p, mp), reward_funcs=[reward_model],
                          reward_processing_classes=[reward_tokenizer], args=RLOOConfig(**rl_args(p, run.output_dir)),
                          train_dataset=Dataset.from_list([{"prompt": m} for m in prompts]),
                          processing_class=tokenizer, peft_config=peft_config(p), callbacks=run.callbacks)
    before = scored(trainer, heldout_reward)
    metrics = run.train(trainer)
    metrics |= {**reward_trend(trainer.state.log_history), "heldout_reward_before": before,
                "heldout_reward_after": scored(trainer, heldout_reward)}
    run.save(trainer, metrics, data=[files.train])


if __name__ == "__main__":
    main()
