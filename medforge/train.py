"""The training loop every stage shares: TRL's SFTTrainer configured from one params.yaml section."""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import TrainerCallback, set_seed

from medforge import chat, modelcard, provenance
from medforge.checkpoints import SaveCheckpoints, checkpoint_params, clear, last_checkpoint, run_dir
from medforge.io import atomic_path, count_records
from medforge.modeling import ModelParams, load_model, load_tokenizer, model_params
from medforge.paths import TRAINING, stage_paths
from medforge.progress import ProgressLines, in_terminal


@dataclass
class LoraParams:
    r: int
    alpha: int
    dropout: float
    target_modules: str | list[str]


@dataclass
class TrainParams:
    """What every training stage shares; each stage adds its own fields in a subclass."""
    init: str
    finetuning: Literal["full", "lora", "qlora"]
    epochs: float
    max_steps: int
    learning_rate: float
    batch_size: int
    gradient_accumulation_steps: int
    warmup_ratio: float
    weight_decay: float
    lr_scheduler_type: str
    gradient_checkpointing: bool
    checkpoint_every_n_layers: int  # selective: >1 keeps the activations of the other layers (faster, more memory)
    bf16: Literal["auto"] | bool  # auto: bf16 autocast on a GPU that has it, fp32 on every CPU
    liger_kernels: Literal["auto"] | bool  # Liger's Triton layer kernels (measured slower here: BENCHMARKS.md)
    torch_compile: bool
    logging_steps: int
    seed: int
    lora: LoraParams


@dataclass
class SFTParams(TrainParams):
    """PT and SFT: next-token loss on packed sequences."""
    max_length: int | None
    packing: bool
    packing_strategy: Literal["bfd", "bfd_split", "wrapped"]
    padding_free: bool  # without packing: each batch as one row (bfd packing is padding-free already)
    chunked_lm_head: Literal["auto"] | bool  # auto: on a GPU only (see trainer_class)
    dataset_num_proc: int  # processes that tokenize the prepared data (0: one per core)


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


class LiveLogger(TrainerCallback):
    """Training curves to dvclive (DVC plots); logs the params that matter, not every TrainingArguments field."""

    KEYS = ("loss", "eval_loss", "learning_rate", "grad_norm", "reward", "kl", "rewards/accuracies",
            "rewards/margins")

    def __init__(self, directory: str | Path, logged_params: dict, history: list[dict] = ()):
        """`history`: the log of the run a resumed one continues (its checkpoint's), replayed into fresh curves: DVC
        removed the killed run's curves with the stage's other outputs."""
        from dvclive import Live
        self.live = Live(dir=str(directory), dvcyaml=None, save_dvc_exp=False)
        self.live.log_params(logged_params)
        for logs in history:
            self.log(logs["step"], logs)

    @classmethod
    def logged(cls, key: str) -> bool:
        """The KEYS, and the mean of each GRPO / RLOO reward function (`rewards/<function>/mean`)."""
        return key in cls.KEYS or (key.startswith("rewards/") and key.endswith("/mean"))

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.log(state.global_step, logs or {})

    def log(self, step: int, logs: dict) -> None:
        values = {k: v for k, v in logs.items() if self.logged(k)}
        if values:
            self.live.step = step
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
    """`auto` never picks bf16 on a CPU: only some CPUs have AVX512-BF16/AMX, and there bf16 autocast gave other
    numbers for the same commit (docs/reproducibility.md); `true` asks for it."""
    if setting != "auto":
        return setting
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


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
        bf16=use_bf16(p.bf16), disable_tqdm=not in_terminal(), use_liger_kernel=use_liger(p.liger_kernels),
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


def memory_mapped(path: str | Path, cache_dir: str | Path):
    """A prepared JSONL file as an Arrow dataset on disk (one `line` per record, its JSON text: nested tool schemas
    stay as written, where Arrow would unify them across rows), or None when the file is empty."""
    from datasets import load_dataset
    if not Path(path).stat().st_size:
        return None
    lines = load_dataset("text", data_files=str(path), split="train", cache_dir=str(cache_dir))
    return lines.rename_column("text", "line")


def processes(setting: int, rows: int) -> int:
    """Processes to tokenize `rows` records with: `setting` (0: one per core), at most one per thousand rows."""
    return min(setting or os.cpu_count(), max(rows // 1000, 1))


def make_trainer(p: SFTParams, train_records: list[dict] | Path, eval_records: list[dict] | Path | None,
                 output_dir: str, assistant_only_loss: bool, mp: ModelParams, callbacks=()):
    """TRL SFTTrainer from `p.init`: LoRA/QLoRA/full, packing, loss masked to assistant turns when asked (the
    conversations tokenized here under the model's own template, medforge.chat; TRL builds labels from the mask).
    Records come as a list or as a prepared JSONL file, read memory-mapped and tokenized by `p.dataset_num_proc`
    processes."""
    from datasets import Dataset
    from trl import SFTConfig

    tokenizer = load_tokenizer(p.init, mp)

    def encode(record: dict) -> dict:
        if assistant_only_loss:
            return chat.tokenize(tokenizer, record["messages"], record.get("tools"))
        return record

    def dataset(records):
        if records is None or isinstance(records, list):
            lines = Dataset.from_list([{"line": json.dumps(r, ensure_ascii=False)} for r in records or []])
        else:
            lines = memory_mapped(records, Path(output_dir) / "datasets")
        if not lines:
            return None
        try:
            return lines.map(lambda row: encode(json.loads(row["line"])), remove_columns=["line"],
                             num_proc=processes(p.dataset_num_proc, len(lines)))
        except chat.TemplateError as e:  # a property of the checkpoint, not of one record: one line
            raise SystemExit(f"{p.init}: {e}") from None

    args = SFTConfig(**training_args(p, output_dir), max_length=p.max_length, packing=p.packing,
                     packing_strategy=p.packing_strategy, padding_free=p.padding_free,
                     include_num_input_tokens_seen="non_padding")
    trainer_cls = trainer_class(chunked_lm_head(p.chunked_lm_head))
    return trainer_cls(model=load_trainable(p, mp), args=args, train_dataset=dataset(train_records),
                       eval_dataset=dataset(eval_records), processing_class=tokenizer,
                       peft_config=peft_config(p), callbacks=list(callbacks))


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


def save_trained(trainer, out: str | Path, merge_adapter: bool, stage: str, parent: str, metrics: dict,
                 **facts) -> None:
    """Write the trained model (or adapter) and tokenizer to `out` atomically, with provenance.json (naming `parent`,
    the model training started from, and `facts`) and a model card with the stage's `metrics`; every rank calls it.

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
            modelcard.write(tmp, stage, provenance.write(tmp, parent, **facts), metrics)
    trainer.accelerator.wait_for_everyone()


class TrainingRun:
    """One training stage's run, in the order a stage reads it:

        run = TrainingRun(stage, p, files)   # where it checkpoints, whether it resumes, the logging callbacks
        trainer = ...(args=...(**training_args(p, run.output_dir)), callbacks=run.callbacks)
        metrics = run.train(trainer)         # train (resumed from the last checkpoint), evaluate, tokens/s
        metrics |= ...                       # the stage's held-out scores, `with whole_weights(trainer.model)`
        run.save(trainer, metrics, data)     # the model (or LoRA adapter), its card, the metrics

    `files`: the stage's command-line files (medforge.paths TRAINING: out, metrics, plots). The trainer checkpoints
    as params.yaml `checkpoints` says; a run of the same inputs resumes from the last checkpoint
    (medforge.checkpoints). Under several processes every rank trains, evaluates, scores and saves (ZeRO-3 and FSDP
    need all ranks for a forward pass or to gather weights); only the main process writes metrics, curves and model.
    """

    def __init__(self, stage: str, p: TrainParams, files):
        self.stage, self.p, self.files, self.main = stage, p, files, is_main_process()
        self.c = checkpoint_params()
        checkpoints = run_dir(self.c, stage)
        self.resume = last_checkpoint(checkpoints) if checkpoints else None
        self.state = json.loads((self.resume / "trainer_state.json").read_text()) if self.resume else {}
        if self.main and (self.resume or not checkpoints):
            print(f"{stage}: resuming from step {self.state['global_step']} ({self.resume})" if self.resume else
                  f"{stage}: no checkpoints: not a DVC stage here, so nothing keys them to its inputs")
        set_seed(p.seed)  # TRL's trainers seed themselves, but a reward head is initialised before the trainer exists
        logged = {"finetuning": p.finetuning, "learning_rate": p.learning_rate, "epochs": p.epochs,
                  "batch_size": p.batch_size * p.gradient_accumulation_steps * int(os.environ.get("WORLD_SIZE", 1)),
                  **({"lora_r": p.lora.r} if p.finetuning != "full" else {})}
        shown = [LiveLogger(files.plots, logged, self.state.get("log_history", [])),
                 *([] if in_terminal() else [ProgressLines(stage)])] if self.main else []
        self.output_dir = str(checkpoints or Path(self.c.dir) / stage / "unkeyed")
        self.callbacks = [SaveCheckpoints(self.c, saving=bool(checkpoints)), *shown]

    def train(self, trainer) -> dict:
        """Train (from the last checkpoint, if any) and evaluate: the stage's training metrics."""
        start = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=str(self.resume) if self.resume else None)
        seconds = time.perf_counter() - start
        metrics = {"train_loss": mean_logged_loss(trainer.state.log_history), "steps": result.global_step,
                   "seconds": round(seconds, 1),
                   **({"resumed_from_step": self.state["global_step"]} if self.resume else {})}
        if trainer.eval_dataset is not None:
            metrics["eval_loss"] = trainer.evaluate()["eval_loss"]
        tokens = trainer.state.num_input_tokens_seen - self.state.get("num_input_tokens_seen", 0)  # this run's
        if tokens:
            metrics["tokens_per_second"] = round(tokens / seconds, 1)
        return metrics

    def save(self, trainer, metrics: dict, data: list[Path], merge_adapter: bool = False) -> None:
        """Write the model (or LoRA adapter; `merge_adapter`: a standalone model) to `files.out` atomically, with
        provenance counting the `data` files it trained and validated on, then the metrics; clear the checkpoints."""
        p = self.p
        facts = {"precision": precision(trainer, p), "world_size": trainer.args.world_size, "seed": p.seed}
        save_trained(trainer, self.files.out, merge_adapter, self.stage, p.init, metrics, **facts,
                     data={str(path): count_records(path) for path in data})
        if self.main:
            clear(self.c, self.stage)
            provenance.write_metrics(self.files.metrics, metrics, **facts)
            print(json.dumps(metrics))


def precision(trainer, p: TrainParams) -> str:
    """The precision the stage trained in, as it was, not as params asked."""
    compute = "bf16 autocast" if trainer.args.bf16 else str(next(trainer.model.parameters()).dtype).split(".")[-1]
    return ("4-bit NF4 base, " if p.finetuning == "qlora" else "") + compute


def mean_logged_loss(log_history: list[dict]) -> float:
    """The training loss averaged over every step, from the logged losses (each the mean over the steps since the
    one logged before): the same for a run resumed from a checkpoint as for one that ran through (SaveCheckpoints
    logs the steps it saves at and the last one)."""
    logged = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    steps = [0] + [step for step, _ in logged]
    return sum(loss * (step - prev) for (step, loss), prev in zip(logged, steps)) / max(steps[-1], 1)


def run_sft(stage: str, p: SFTParams, assistant_only_loss: bool) -> None:
    """PT and SFT: next-token training on the JSONL records of the stage's `--train` and `--validation` files."""
    files = stage_paths("train", "validation", *TRAINING)
    run = TrainingRun(stage, p, files)
    trainer = make_trainer(p, files.train, files.validation, run.output_dir, assistant_only_loss, model_params(),
                           callbacks=run.callbacks)
    run.save(trainer, run.train(trainer), data=[files.train, files.validation])
