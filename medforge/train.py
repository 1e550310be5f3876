"""The training loop every stage shares: TRL's SFTTrainer configured from one params.yaml section."""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import TrainerCallback, set_seed

from medforge import provenance
from medforge.io import atomic_path, read_jsonl, write_json
from medforge.modeling import ModelParams, load_model, load_tokenizer, model_params


@dataclass
class LoraParams:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"


@dataclass
class TrainParams:
    """What every training stage shares; each stage adds its own fields in a subclass."""
    init: str = "models/base"
    finetuning: Literal["full", "lora", "qlora"] = "lora"
    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 2e-4
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    lr_scheduler_type: str = "cosine"
    gradient_checkpointing: bool = False
    checkpoint_every_n_layers: int = 1  # selective: >1 keeps the activations of the other layers (faster, more memory)
    bf16: Literal["auto"] | bool = "auto"  # auto: where bf16 is fast (a GPU, or a CPU with AMX/AVX512-BF16)
    liger_kernels: Literal["auto"] | bool = False  # Liger's Triton layer kernels (measured slower here: BENCHMARKS.md)
    torch_compile: bool = False
    logging_steps: int = 10
    seed: int = 0
    lora: LoraParams = field(default_factory=LoraParams)


@dataclass
class SFTParams(TrainParams):
    """PT and SFT: next-token loss on packed sequences."""
    max_length: int | None = 512
    packing: bool = True
    packing_strategy: Literal["bfd", "bfd_split", "wrapped"] = "bfd"
    padding_free: bool = False  # without packing: each batch as one row (bfd packing is padding-free already)
    chunked_lm_head: Literal["auto"] | bool = "auto"  # auto: on a GPU only (see trainer_class)


def length_grouped(records: list, lengths: list[int], step_size: int, seed: int) -> list:
    """`records` reordered so that the `step_size` examples of each optimizer step have similar lengths, the steps
    in random order (transformers' LengthGroupedSampler, done on the data); the trainer then reads them in order.
    A step holds the same examples however it is split into micro-batches; a last partial step stays last."""
    rng = random.Random(seed)
    order = sorted(range(len(records)), key=lambda i: (-lengths[i], rng.random()))
    steps = [order[i:i + step_size] for i in range(0, len(order), step_size)]
    full, partial = (steps, []) if len(steps[-1]) == step_size else (steps[:-1], steps[-1:])
    rng.shuffle(full)
    return [records[i] for step in full + partial for i in step]


def read_records(path: str | Path) -> list[dict]:
    return [record for _, record in read_jsonl(path)]


class LiveLogger(TrainerCallback):
    """Training curves to dvclive (DVC plots); logs the params that matter, not every TrainingArguments field."""

    KEYS = ("loss", "eval_loss", "learning_rate", "grad_norm", "reward", "kl", "rewards/accuracies",
            "rewards/margins")

    def __init__(self, stage: str, logged_params: dict):
        from dvclive import Live
        self.live = Live(dir=f"dvclive/{stage}", dvcyaml=None, save_dvc_exp=False)
        self.live.log_params(logged_params)

    @classmethod
    def logged(cls, key: str) -> bool:
        """The KEYS, and the mean of each GRPO / RLOO reward function (`rewards/<function>/mean`)."""
        return key in cls.KEYS or (key.startswith("rewards/") and key.endswith("/mean"))

    def on_log(self, args, state, control, logs=None, **kwargs):
        values = {k: v for k, v in (logs or {}).items() if self.logged(k)}
        if values:
            self.live.step = state.global_step
            for k, v in values.items():
                self.live.log_metric(f"train/{k}" if k != "eval_loss" else "eval/loss", v)
            self.live.make_summary()

    def on_train_end(self, args, state, control, **kwargs):
        self.live.end()


def peft_config(p: TrainParams, task_type: str = "CAUSAL_LM"):
    if p.finetuning == "full":
        return None
    from peft import LoraConfig
    return LoraConfig(r=p.lora.r, lora_alpha=p.lora.alpha, lora_dropout=p.lora.dropout,
                      target_modules=p.lora.target_modules, task_type=task_type)


def use_bf16(setting: str | bool) -> bool:
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def chunked_lm_head(setting: str | bool) -> bool:
    return torch.cuda.is_available() if setting == "auto" else setting


def use_liger(setting: str | bool) -> bool:
    if setting != "auto":
        return setting
    import importlib.util
    return torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None


def training_args(p: TrainParams, output_dir: str) -> dict:
    """The TrainingArguments fields every TRL config (SFT, Reward, DPO, KTO, ORPO, RLOO, GRPO) takes from params."""
    return dict(
        output_dir=output_dir, save_strategy="no", report_to="none", seed=p.seed, data_seed=p.seed,
        num_train_epochs=p.epochs, max_steps=p.max_steps, learning_rate=p.learning_rate,
        per_device_train_batch_size=p.batch_size, per_device_eval_batch_size=p.batch_size,
        gradient_accumulation_steps=p.gradient_accumulation_steps, warmup_steps=p.warmup_ratio,
        weight_decay=p.weight_decay, lr_scheduler_type=p.lr_scheduler_type, logging_steps=p.logging_steps,
        gradient_checkpointing=p.gradient_checkpointing, use_cpu=not torch.cuda.is_available(),
        bf16=use_bf16(p.bf16), disable_tqdm=True, use_liger_kernel=use_liger(p.liger_kernels),
        torch_compile=p.torch_compile,
        **({"gradient_checkpointing_kwargs": {"every_n_layers": p.checkpoint_every_n_layers}}
           if p.checkpoint_every_n_layers > 1 else {}),
    )


def load_trainable(p: TrainParams, mp: ModelParams, head: str = "causal_lm"):
    """The model a stage trains, from `p.init`: a 4-bit NF4 base prepared for k-bit training under QLoRA."""
    model = load_model(p.init, mp, bits=4 if p.finetuning == "qlora" else None, head=head)
    if p.finetuning == "qlora":
        from peft import prepare_model_for_kbit_training
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=p.gradient_checkpointing)
    return model


def trainer_class(chunked: bool):
    from transformers import Trainer
    from trl import SFTTrainer

    class NativeLossSFTTrainer(SFTTrainer):
        """SFTTrainer with the model's own loss instead of TRL's chunked LM head.

        The chunked head saves GPU memory on large vocabularies; on a CPU with a small one it only costs time
        (measured here: 1.25x slower, same loss to 4 decimals). TRL's extra metrics (entropy, token accuracy) go.
        """

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return SFTTrainer if chunked else NativeLossSFTTrainer


def make_trainer(p: SFTParams, train_records: list[dict], eval_records: list[dict] | None, output_dir: str,
                 assistant_only_loss: bool, mp: ModelParams | None = None, callbacks=()):
    """TRL SFTTrainer from `p.init`: LoRA/QLoRA/full, packing, loss masked to assistant turns when asked."""
    from datasets import Dataset
    from trl import SFTConfig

    mp = mp or model_params()
    args = SFTConfig(**training_args(p, output_dir), max_length=p.max_length, packing=p.packing,
                     packing_strategy=p.packing_strategy, padding_free=p.padding_free,
                     assistant_only_loss=assistant_only_loss, include_num_input_tokens_seen="non_padding")
    trainer_cls = trainer_class(chunked_lm_head(p.chunked_lm_head))
    return trainer_cls(model=load_trainable(p, mp), args=args, train_dataset=Dataset.from_list(train_records),
                       eval_dataset=Dataset.from_list(eval_records) if eval_records else None,
                       processing_class=load_tokenizer(p.init, mp), peft_config=peft_config(p),
                       callbacks=list(callbacks))


def is_main_process() -> bool:
    """The process that writes outputs: rank 0 of a multi-process launch (medforge.launch), or the only one."""
    return int(os.environ.get("RANK", 0)) == 0


def whole_weights(model):
    """A context in which every rank holds the model's full weights for held-out scoring: DeepSpeed ZeRO-3 shards
    them (gathered here, a collective: every rank must enter); a no-op otherwise."""
    sharded = [t for t in model.parameters() if hasattr(t, "ds_id")]
    if not sharded:
        return contextlib.nullcontext()
    import deepspeed
    return deepspeed.zero.GatheredParameters(sharded)


def save_trained(trainer, out: str | Path, parent: str, merge_adapter: bool) -> None:
    """Write the trained model (or adapter) and tokenizer to `out` atomically, with provenance.json naming `parent`,
    the model training started from; every rank calls it.

    trainer.save_model gathers ZeRO-3/FSDP-sharded weights on all ranks and writes on the main process only, into
    the main process's temporary directory (broadcast so all ranks name the same path). `merge_adapter`: the saved
    LoRA adapter is then loaded merged into its base on the main process, and that standalone model is saved.
    """
    from accelerate.utils import broadcast_object_list
    main = trainer.is_world_process_zero()
    merge = merge_adapter and hasattr(trainer.model, "merge_and_unload")
    with atomic_path(out, directory=True) if main else contextlib.nullcontext() as tmp:
        tmp = Path(broadcast_object_list([str(tmp)])[0])
        saved = tmp / "adapter" if merge else tmp
        trainer.save_model(str(saved))
        if main:
            (saved / "training_args.bin").unlink(missing_ok=True)
        if main and merge:
            from transformers.integrations.deepspeed import unset_hf_deepspeed_config
            unset_hf_deepspeed_config()  # load whole on this process alone, not ZeRO-3-partitioned
            task = json.loads((saved / "adapter_config.json").read_text()).get("task_type")
            model = load_model(saved, model_params(), head="reward" if task == "SEQ_CLS" else "causal_lm")
            model.save_pretrained(tmp)
            trainer.processing_class.save_pretrained(tmp)
            shutil.rmtree(saved)
        if main:
            provenance.write(tmp, parent)
    trainer.accelerator.wait_for_everyone()


def run(stage: str, p: TrainParams, build, out: str | Path, report=None, merge_adapter: bool = False) -> dict:
    """Train, evaluate and write the model (or LoRA adapter) to `out` atomically, with metrics and curves.

    `build(output_dir, callbacks)` returns the TRL trainer; `report(trainer)` adds stage metrics after training.
    `merge_adapter` saves a standalone model even when training a LoRA adapter.
    Under several processes every rank trains, evaluates, reports and saves (ZeRO-3 and FSDP need all ranks for a
    forward pass or to gather weights); only the main process writes metrics, curves and the model.
    """
    logged = {"finetuning": p.finetuning, "learning_rate": p.learning_rate, "epochs": p.epochs,
              "batch_size": p.batch_size * p.gradient_accumulation_steps * int(os.environ.get("WORLD_SIZE", 1))}
    if p.finetuning != "full":
        logged["lora_r"] = p.lora.r
    main = is_main_process()
    with tempfile.TemporaryDirectory(prefix=f"{stage}-") as scratch:
        set_seed(p.seed)  # TRL's trainers seed themselves, but a reward head is initialised before the trainer exists
        trainer = build(scratch, [LiveLogger(stage, logged)] if main else [])
        start = time.perf_counter()
        result = trainer.train()
        seconds = time.perf_counter() - start
        metrics = {"train_loss": result.training_loss, "steps": result.global_step, "seconds": round(seconds, 1)}
        if trainer.eval_dataset is not None:
            metrics["eval_loss"] = trainer.evaluate()["eval_loss"]
        if trainer.state.num_input_tokens_seen:  # summed over all processes
            metrics["tokens_per_second"] = round(trainer.state.num_input_tokens_seen / seconds, 1)
        if report:
            with whole_weights(trainer.model):
                metrics.update(report(trainer))
        save_trained(trainer, out, p.init, merge_adapter)
    if main:
        write_json(f"metrics/{stage}.json", metrics)
        print(json.dumps(metrics))
    return metrics


def run_sft(stage: str, p: SFTParams, train_file: str, eval_file: str, out: str, assistant_only_loss: bool) -> dict:
    """PT and SFT: next-token training on JSONL records."""
    def build(output_dir, callbacks):
        return make_trainer(p, read_records(train_file), read_records(eval_file), output_dir, assistant_only_loss,
                            callbacks=callbacks)
    return run(stage, p, build, out)
