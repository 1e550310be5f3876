"""What the online RL stages (`ppo` = RLOO, `grpo`) share: sampling params, the reward-curve summary and held-out
scoring."""
from __future__ import annotations

from dataclasses import dataclass

from medforge.train import TrainParams, training_args, whole_weights


@dataclass
class RLParams(TrainParams):
    num_generations: int  # samples per prompt; each is judged against the others' mean reward
    max_completion_length: int
    temperature: float
    beta: float  # KL penalty towards the starting (SFT) policy
    heldout_size: int  # held-out prompts answered greedily before and after training


def rl_args(p: RLParams, output_dir: str) -> dict:
    """Config fields RLOOConfig and GRPOConfig both take."""
    return dict(**training_args(p, output_dir), num_generations=p.num_generations,
                max_completion_length=p.max_completion_length, temperature=p.temperature, beta=p.beta)


def reward_trend(log_history: list[dict]) -> dict:
    """Mean training reward over the first and the last 10% of logged steps (at least one step each), and the
    mean reward and KL to the starting policy over the whole run."""
    rewards = [entry["reward"] for entry in log_history if "reward" in entry]
    if not rewards:
        return {}
    n = max(1, len(rewards) // 10)
    first, last = sum(rewards[:n]) / n, sum(rewards[-n:]) / n
    trend = {"reward_first_10pct": first, "reward_last_10pct": last, "reward_gain": last - first,
             "reward_mean": sum(rewards) / len(rewards)}
    kls = [entry["kl"] for entry in log_history if "kl" in entry]
    if kls:
        trend["kl_mean"] = sum(kls) / len(kls)
    return trend


def scored(trainer, score) -> float:
    """`score(model)` of the trainer's model, with its weights whole on every rank (medforge.train.whole_weights)."""
    with whole_weights(trainer.model):
        return score(trainer.model)
