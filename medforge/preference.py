"""Preference pairs for the alignment stages: TRL's conversational form (reward model, ORPO, KTO), pairs tokenized
here (DPO, tool calls included) and held-out scoring.

Held-out metrics are the same for every stage, so DPO, ORPO and KTO compare directly:
  reward accuracy  share of pairs where training raised log p(chosen) more than log p(rejected), i.e. DPO's
                   implicit reward log pi(y|x) - log pi_init(y|x) ranks chosen above rejected
  reward margin    mean of that difference, in nats
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from medforge.chat import render
from medforge.formats import read_canonical, to_preference
from medforge.modeling import load_model
from medforge.train import TrainParams, length_grouped, memory_mapped, processes, whole_weights


def load_pairs(path: str | Path) -> list[dict]:
    """Canonical pairs; the `kind` tag of the generated sets (red_flags, dangerous, department, care) is kept."""
    return read_canonical(path, lambda record: {**to_preference(record), "kind": record.get("kind")})


def by_kind(pairs: list[dict], correct: torch.Tensor) -> dict:
    """Accuracy per `kind` tag, where the pairs have one."""
    groups = {}
    for pair, ok in zip(pairs, correct.tolist(), strict=True):
        if pair.get("kind"):
            groups.setdefault(pair["kind"], []).append(ok)
    return {kind: sum(v) / len(v) for kind, v in sorted(groups.items())}


def assistant(answer: str | dict) -> dict:
    """An answer as the assistant's message: its text, or the message that calls tools."""
    return answer if isinstance(answer, dict) else {"role": "assistant", "content": answer}


def uses_tools(pair: dict) -> bool:
    return bool(pair.get("tools")) or not all(isinstance(pair[key], str) for key in ("chosen", "rejected"))


def without_tools(stage: str, pairs: list[dict]) -> list[dict]:
    """The pairs that use no tools, for the stages that train on TRL's conversational records (the reward model,
    ORPO, KTO); says how many it leaves out."""
    kept = [pair for pair in pairs if not uses_tools(pair)]
    if len(kept) < len(pairs):
        print(f"{stage}: {len(pairs) - len(kept)} tool-calling pairs left out (they train through DPO)")
    return kept


def to_trl(pair: dict) -> dict:
    """Canonical pair -> TRL's conversational preference record (the trainer applies the chat template)."""
    if uses_tools(pair):
        raise SystemExit("tool-calling pairs (with tools, or answers that call them) train through DPO only; the "
                         "reward model, ORPO and KTO take pairs without tools")
    return {"prompt": pair["prompt"], "chosen": [assistant(pair["chosen"])], "rejected": [assistant(pair["rejected"])]}


def tokenized(tokenizer, pair: dict) -> dict:
    """A pair as TRL's DPO trainer tokenizes it (`prompt_ids`, `chosen_ids`, `rejected_ids`; the prompt is what the
    prompt alone and both whole conversations start with), with its tools under the model's template. Rows of ids:
    nested messages and tool schemas Arrow would unify across rows, adding null fields to what the template sees."""
    (chosen_head, chosen), (rejected_head, rejected) = (
        completion_ids(tokenizer, pair["prompt"], pair[key], pair.get("tools")) for key in ("chosen", "rejected"))
    n = min(len(chosen_head), len(rejected_head))
    return {"prompt_ids": chosen_head[:n], "chosen_ids": chosen_head[n:] + chosen,
            "rejected_ids": rejected_head[n:] + rejected}


def tokenized_dpo_trainer():
    """TRL's DPOTrainer on pairs tokenized here (`tokenized`): it skips its own tokenization, and drops what TRL
    drops, the pairs whose prompt alone fills max_length."""
    from trl import DPOTrainer

    class TokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if args.max_length is not None and args.truncation_mode == "keep_start":
                return dataset.filter(lambda pair: len(pair["prompt_ids"]) < args.max_length)
            return dataset

    return TokenizedDPOTrainer


def completion_ids(tokenizer, prompt: list[dict], completion: str | dict,
                   tools: list[dict] | None = None) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) exactly as TRL's preference trainers split a rendered conversation."""
    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    head = ids(render(tokenizer, prompt, tools, add_generation_prompt=True))
    full = ids(render(tokenizer, prompt + [assistant(completion)], tools))
    n = next((i for i, (a, b) in enumerate(zip(head, full)) if a != b), min(len(head), len(full)))
    return full[:n], full[n:]


@torch.no_grad()
def completion_logps(model, tokenizer, prompts: list[list[dict]], completions: list[str | dict],
                     tools: list[list[dict] | None] | None = None, batch_size: int = 16) -> torch.Tensor:
    """Sum of log p(completion tokens | prompt) for each pair of prompt and completion (and the prompt's tools)."""
    model.eval()
    tools = tools or [None] * len(prompts)
    out = []
    for start in range(0, len(prompts), batch_size):
        end = start + batch_size
        pieces = [completion_ids(tokenizer, p, c, t)
                  for p, c, t in zip(prompts[start:end], completions[start:end], tools[start:end])]
        width = max(len(h) + len(c) for h, c in pieces)
        input_ids = torch.full((len(pieces), width), tokenizer.pad_token_id or 0)
        attention = torch.zeros_like(input_ids)
        mask = torch.zeros_like(input_ids, dtype=torch.bool)
        for row, (h, c) in enumerate(pieces):
            input_ids[row, :len(h) + len(c)] = torch.tensor(h + c)
            attention[row, :len(h) + len(c)] = 1
            mask[row, len(h):len(h) + len(c)] = True
        logits = model(input_ids=input_ids.to(model.device), attention_mask=attention.to(model.device)).logits
        logps = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, input_ids[:, 1:, None].to(model.device))
        out.append((logps[..., 0] * mask[:, 1:].to(model.device)).sum(-1).cpu())
    return torch.cat(out)


def pair_logps(model, tokenizer, pairs: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    prompts, tools = [p["prompt"] for p in pairs], [p.get("tools") for p in pairs]
    return (completion_logps(model, tokenizer, prompts, [p["chosen"] for p in pairs], tools),
            completion_logps(model, tokenizer, prompts, [p["rejected"] for p in pairs], tools))


def implicit_reward_metrics(pairs: list[dict], before: tuple[torch.Tensor, torch.Tensor],
                            after: tuple[torch.Tensor, torch.Tensor]) -> dict:
    """Held-out reward accuracy and margin (module docstring) from (chosen, rejected) log-probs before and after
    training, with the accuracy per kind of pair where the pairs are tagged."""
    margin = (after[0] - before[0]) - (after[1] - before[1])
    metrics = {"heldout_reward_accuracy": (margin > 0).float().mean().item(),
               "heldout_reward_margin": margin.mean().item()}
    if kinds := by_kind(pairs, margin > 0):
        metrics["heldout_reward_accuracy_by_kind"] = kinds
    return metrics


@torch.no_grad()
def reward_scores(model, tokenizer, conversations: list[list[dict]], batch_size: int = 16) -> torch.Tensor:
    """The reward model's score of each whole conversation, rendered as the RL trainers render it."""
    model.eval()
    scores = []
    for start in range(0, len(conversations), batch_size):
        texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations[start:start + batch_size]]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
        scores.append(model(**inputs.to(model.device)).logits[:, 0].float().cpu())
    return torch.cat(scores)


@dataclass
class PairParams(TrainParams):
    """What every stage trained on preference pairs shares (RM, DPO, ORPO, KTO)."""
    heldout: str
    max_length: int
    group_by_length: Literal["auto"] | bool  # each step's pairs of similar length; auto: on a GPU
    dataset_num_proc: int  # processes that tokenize the prepared pairs (0: one per core)


@dataclass
class PreferenceParams(PairParams):
    """What the preference methods (DPO, ORPO, KTO, ...) share. The class attributes (not params) tell `make plan`
    what one training step holds: `paired`, chosen and rejected; `reference`, a reference model's forward too;
    `chunked_logprobs`, log-probabilities computed in chunks by TRL, never the whole logits."""
    beta: float
    paired = True
    reference = False
    chunked_logprobs = False


def pair_records(stage: str, p: PairParams, tokenizer, path: str | Path, cache_dir: Path, tokenize: bool,
                 grouped: bool = False):
    """A prepared pairs file as TRL's records, memory-mapped and encoded by `p.dataset_num_proc` processes (None
    when empty): tokenized here (`tokenized`, for `tokenized_dpo_trainer`, tool-calling pairs included) or TRL's
    conversational pairs (the reward model, ORPO, KTO; tool-calling pairs left out, counted).

    `grouped`: in length-grouped step order, which the trainer must then read as it is
    (`train_sampling_strategy="sequential"`). Padded pair batches waste most of a step on padding unless the lengths
    in a step are alike (TRL 1.16 has no padding-free mode for pairs)."""
    lines = memory_mapped(path, cache_dir)
    if lines is None:
        return None
    n = processes(p.dataset_num_proc, len(lines))

    def pair(row: dict) -> dict:
        return to_preference(json.loads(row["line"]))

    if not tokenize:
        kept = lines.filter(lambda row: not uses_tools(pair(row)), num_proc=n)
        if len(kept) < len(lines):
            print(f"{stage}: {len(lines) - len(kept)} tool-calling pairs left out of {path} (they train through DPO)")
        lines = kept

    def encode(row: dict) -> dict:
        one = pair(row)
        if not tokenize:
            record = to_trl(one)
            return {**record, "length": pair_length(tokenizer, one)} if grouped else record
        record = tokenized(tokenizer, one)  # its lengths are pair_length's: the prompt, then the longer answer
        longer = max(len(record["chosen_ids"]), len(record["rejected_ids"]))
        return {**record, "length": len(record["prompt_ids"]) + longer} if grouped else record

    records = lines.map(encode, remove_columns=["line"], num_proc=n)
    if not grouped:
        return records
    step = p.batch_size * p.gradient_accumulation_steps * int(os.environ.get("WORLD_SIZE", 1))
    order = length_grouped(list(range(len(records))), records["length"], step, p.seed)
    return records.remove_columns("length").select(order)


def pair_datasets(stage: str, p: PairParams, tokenizer, files, output_dir: str, tokenize: bool,
                  unpaired: bool = False):
    """(train, validation, order) for a stage trained on the `--train` and `--validation` pairs (pair_records,
    cached under `output_dir`): the training pairs length-grouped where `group_by_length` asks, which the trainer
    must then read in order (`order`: the config fields that say so, for the stage's TRL config); `unpaired` (KTO):
    each pair gives a desirable and an undesirable example, in TRL's own order."""
    grouped = not unpaired and (torch.cuda.is_available() if p.group_by_length == "auto" else p.group_by_length)
    cache = Path(output_dir) / "datasets"
    train = pair_records(stage, p, tokenizer, files.train, cache, tokenize, grouped)
    validation = pair_records(stage, p, tokenizer, files.validation, cache, tokenize)
    if unpaired:
        from trl.data_utils import unpair_preference_dataset
        train = unpair_preference_dataset(train)
        validation = validation and unpair_preference_dataset(validation)
    return train, validation, {"train_sampling_strategy": "sequential"} if grouped else {}


@dataclass
class ReferenceParams(PreferenceParams):
    """DPO and KTO: trained against a reference (the starting model)."""
    precompute_ref_log_probs: bool
    reference = True


def reference_model(p: ReferenceParams, mp):
    """The frozen reference TRL needs only under full fine-tuning without precomputed reference log-probs;
    None otherwise (LoRA: the policy with its adapter disabled; precomputed: scored once before training)."""
    return load_model(p.init, mp) if p.finetuning == "full" and not p.precompute_ref_log_probs else None


class HeldoutPairs:
    """The held-out pairs (`p.heldout`) scored by the model about to train, then `after(trainer)`: reward accuracy and
    margin against those scores (module docstring), and how many training examples the trainer dropped."""

    def __init__(self, p: PairParams, tokenizer, model):
        self.p, self.tokenizer, self.pairs = p, tokenizer, load_pairs(p.heldout)
        with whole_weights(model):
            self.before = pair_logps(model, tokenizer, self.pairs)

    def after(self, trainer, examples: int) -> dict:
        """`examples`: the training examples given to the trainer (it drops those whose prompt fills max_length)."""
        dropped = examples - len(trainer.train_dataset)
        if dropped:
            print(f"{dropped} training examples dropped: prompt alone fills max_length={self.p.max_length}")
        with whole_weights(trainer.model):
            after = pair_logps(trainer.model, self.tokenizer, self.pairs)
        return {"train_examples": len(trainer.train_dataset), "dropped_too_long": dropped,
                **implicit_reward_metrics(self.pairs, self.before, after)}


def pair_length(tokenizer, pair: dict) -> int:
    """Tokens of the longer of the pair's two rendered conversations: the padded length the pair needs."""
    return max(sum(map(len, completion_ids(tokenizer, pair["prompt"], pair[key], pair.get("tools"))))
               for key in ("chosen", "rejected"))
