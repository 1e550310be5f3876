"""Multi-process training through the real launcher: `python -m medforge.launch stages.sft` with NPROC=2 on the CPU
(torchrun, gloo), against one process with twice the gradient accumulation.

Both runs read the same files, params and seed, so the sampler yields the same batches in the same order. Accelerate
deals them out in turn (rank 0 gets batches 0, 2, 4, ..., rank 1 gets 1, 3, 5, ...), so one optimizer step of
2 processes x batch b x accumulation 1 sees exactly the batches of one step of 1 process x batch b x accumulation 2,
and the Trainer normalises the loss by the token count of the whole step in both. Batches hold one packed row: the
Trainer averages evaluation losses per batch, and a last, partial batch holds other rows under 2 processes (padded
with repeats) than under 1, so only single-row batches give the same evaluation loss. Only the order of floating-point
sums may differ: per-step losses must agree within TOLERANCE (relative), and a run on another data order must not.
"""
import json
import os
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from medforge import knowledge, params
from medforge.launch import CONFIGS, command, settings
from medforge.modeling import load_tokenizer
from stages.generate import by_language, sft_conversations
from tests.pipeline import DVC, ROOT, kill_tree, set_params, stage_args

SFT = ["python", "-m", "medforge.launch", "stages.sft", *stage_args("sft")]  # the pipeline's sft command
TOLERANCE = 1e-4  # max relative difference of a step's loss; measured 0 (bitwise equal) on the 2-core dev machine
STEPS = 6
MAX_LENGTH = 128


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tiny_model_dir, tmp_path_factory):
    """Generated chats short enough that every packed batch has answer tokens to learn."""
    tokenizer = load_tokenizer(tiny_model_dir, params.load("model"))
    conds = [knowledge.localized(r, lang) for r in knowledge.load()[:6] for lang in knowledge.LANGS]
    chats = [c for c in sft_conversations(random.Random(0), params.load("generate"), conds, by_language(conds))
             if len(tokenizer.apply_chat_template(c["messages"], tokenize=True)["input_ids"]) <= MAX_LENGTH]
    path = tmp_path_factory.mktemp("data")
    for split, records in (("train", chats), ("validation", chats[:8])):
        with open(path / f"sft_{split}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return path


def setup(workdir: Path, model_dir: Path, data: Path, accumulation: int, seed: int = 0, every_steps: int = 0,
          steps: int = STEPS) -> None:
    """`workdir` ready for an SFT run; checkpointing every `every_steps` makes it a DVC pipeline (what keys them)."""
    (workdir / "data").mkdir(parents=True)
    shutil.copytree(data, workdir / "data/prepared")
    set_params(workdir, {"model": {"dtype": "float32"},
                         "sft": {"init": str(model_dir), "finetuning": "full", "max_steps": steps, "batch_size": 1,
                                 "gradient_accumulation_steps": accumulation, "learning_rate": 0.003,
                                 "warmup_ratio": 0.0, "max_length": MAX_LENGTH, "logging_steps": 1, "bf16": False,
                                 "seed": seed},
                         "checkpoints": {"every_steps": every_steps, "every_minutes": 0, "keep": 1,
                                         "dir": "checkpoints"}}, base=ROOT)
    if every_steps:
        subprocess.run([str(DVC), "init", "--no-scm", "-q"], cwd=workdir, check=True)
        stage = {"cmd": shlex.join(SFT), "deps": ["data/prepared"], "params": ["sft"], "outs": ["models/sft"]}
        (workdir / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"sft": stage}}))


def launch(workdir: Path, nproc: int, **popen):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DIST": "ddp" if nproc > 1 else "single", "NPROC": str(nproc),
           "MASTER_PORT": str(free_port())}
    return subprocess.Popen([sys.executable, *SFT[1:]], cwd=workdir, env=env,
                            text=True, **popen)


def train(workdir: Path, model_dir: Path, data: Path, nproc: int, accumulation: int, seed: int = 0,
          steps: int = STEPS) -> Path:
    """One SFT run in `workdir` through the launcher (set up unless it is); returns the directory it ran in."""
    if not (workdir / "params.yaml").exists():
        setup(workdir, model_dir, data, accumulation, seed, steps=steps)
    run = launch(workdir, nproc, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 0, output[-3000:]
    (workdir / "output.txt").write_text(output)
    return workdir


def losses(run: Path) -> list[float]:
    rows = (run / "dvclive/sft/plots/metrics/train/loss.tsv").read_text().split("\n")[1:]
    return [float(row.split("\t")[1]) for row in rows if row]


def max_relative_difference(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) == STEPS
    return max(abs(x - y) / abs(y) for x, y in zip(a, b))


def max_abs_difference(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.slow
def test_two_processes_match_one_with_double_accumulation(tiny_model_dir, data, tmp_path):
    one = train(tmp_path / "one", tiny_model_dir, data, nproc=1, accumulation=2)
    two = train(tmp_path / "two", tiny_model_dir, data, nproc=2, accumulation=1)
    shuffled = train(tmp_path / "shuffled", tiny_model_dir, data, nproc=1, accumulation=2, seed=1)

    assert max_relative_difference(losses(two), losses(one)) <= TOLERANCE
    assert max_relative_difference(losses(shuffled), losses(one)) > TOLERANCE  # the comparison can fail
    # Written once, by the main process: one metrics file, the same model, no leftover temporary directories.
    m1, m2 = (json.loads((run / "metrics/sft.json").read_text()) for run in (one, two))
    assert m2["steps"] == STEPS and abs(m2["eval_loss"] - m1["eval_loss"]) <= TOLERANCE * m1["eval_loss"]
    assert [p.name for p in (two / "models").iterdir()] == ["sft"]
    w1, w2, w3 = (load_file(run / "models/sft/model.safetensors") for run in (one, two, shuffled))
    assert w1.keys() == w2.keys()
    # Adam's first steps are close to sign(gradient), so rounding in the gradient sums can move a weight by a few
    # 1e-6 (measured 4e-6 and 6e-6 with varlen attention, under 1e-6 with SDPA); another data order moves them by ~2e-2.
    print("weight difference", max_abs_difference(w1, w2), "other data order", max_abs_difference(w1, w3))
    assert max_abs_difference(w1, w2) < max_abs_difference(w1, w3) / 100


@pytest.mark.slow
def test_two_processes_killed_after_a_checkpoint_resume_to_the_same_losses(tiny_model_dir, data, tmp_path):
    steps = 40  # a few seconds: the run must still be going when the test kills it
    through = train(tmp_path / "through", tiny_model_dir, data, nproc=2, accumulation=1, steps=steps)
    killed = tmp_path / "killed"
    setup(killed, tiny_model_dir, data, accumulation=1, every_steps=2, steps=steps)
    run = launch(killed, nproc=2, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    # any complete checkpoint: with keep 1, checkpoint-2 lives only until checkpoint-4 is written, which a poll can miss
    while not list(killed.glob("checkpoints/sft/*/checkpoint-*/trainer_state.json")):
        assert run.poll() is None and time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.05)
    kill_tree(run)  # torchrun and both workers
    train(killed, tiny_model_dir, data, nproc=2, accumulation=1)
    step = int(re.search(r"sft: resuming from step (\d+)", (killed / "output.txt").read_text()).group(1))
    assert 2 <= step < steps and step % 2 == 0
    assert losses(killed) == losses(through)
    m1, m2 = (json.loads((r / "metrics/sft.json").read_text()) for r in (through, killed))
    assert m2["resumed_from_step"] == step and m2["eval_loss"] == m1["eval_loss"] and m2["train_loss"] == m1["train_loss"]
    assert not (killed / "checkpoints/sft").exists()


def test_launcher_settings_and_commands(monkeypatch):
    assert settings({}) == {"DIST": "single", "MASTER_ADDR": "127.0.0.1", "NPROC": 1, "NNODES": 1, "NODE_RANK": 0,
                            "MASTER_PORT": 29500}
    with pytest.raises(SystemExit, match="DIST=zero4: unknown; choose one of single, ddp, zero2, zero3"):
        settings({"DIST": "zero4"})
    with pytest.raises(SystemExit, match="DIST=single runs one process"):
        settings({"NPROC": "2"})
    with pytest.raises(SystemExit, match="NPROC=0: expected an integer >= 1"):
        settings({"DIST": "ddp", "NPROC": "0"})
    s = settings({"DIST": "zero3", "NPROC": "8", "NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "node1"})
    with pytest.raises(SystemExit, match="DIST=zero3 needs CUDA GPUs"):
        command("stages.sft", [], s, gpu=False)
    gpu = command("stages.sft", [], s, gpu=True)
    assert gpu[1:3] == ["-m", "accelerate.commands.launch"] and gpu[-2:] == ["-m", "stages.sft"]
    assert gpu[gpu.index("--num_processes") + 1] == "16" and gpu[gpu.index("--machine_rank") + 1] == "1"
    cpu = command("stages.sft", [], {**s, "DIST": "ddp"}, gpu=False)
    assert cpu[1:3] == ["-m", "torch.distributed.run"] and cpu[cpu.index("--nproc_per_node") + 1] == "8"


@pytest.mark.parametrize("dist", ["single", "ddp", "zero2", "zero3", "zero3_offload", "fsdp2"])
def test_accelerate_configs_load(dist, monkeypatch):
    from accelerate.commands.config.config_args import load_config_from_file
    monkeypatch.chdir(ROOT)  # DeepSpeed config paths are relative to the repository root, where DVC runs stages
    config = load_config_from_file(str(CONFIGS / f"{dist}.yaml"))
    assert config.mixed_precision in (None, "no")  # the Trainer's bf16 decides
    if dist.startswith("zero"):
        ds = json.loads(Path(config.deepspeed_config["deepspeed_config_file"]).read_text())
        assert ds["zero_optimization"]["stage"] == int(dist[4])
        assert ds["train_micro_batch_size_per_gpu"] == ds["bf16"]["enabled"] == "auto"
        assert ds["zero_optimization"].get("stage3_gather_16bit_weights_on_model_save", dist == "zero2")
    if dist == "fsdp2":
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"


@pytest.mark.slow
def test_two_processes_train_dpo_on_memory_mapped_pairs(tiny_model_dir, tmp_path):
    """DPO under 2 processes with reference log-probs precomputed: rank 0 writes them beside the pairs' Arrow file
    (in the stage's own cache), where rank 1 must find them (medforge.preference.pair_records)."""
    from tests.test_alignment import PAIRS
    workdir = tmp_path / "dpo"
    (workdir / "data/prepared").mkdir(parents=True)
    pairs = [{**pair, "chosen": f"{pair['chosen']} {i}"} for i in range(8) for pair in PAIRS]
    for split, records in (("train", pairs), ("validation", pairs[:4])):
        (workdir / f"data/prepared/preference_{split}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    set_params(workdir, {"model": {"dtype": "float32"},
                         "preference": {"dpo": {"init": str(tiny_model_dir), "finetuning": "lora", "max_steps": 2,
                                                "batch_size": 2, "logging_steps": 1, "precompute_ref_log_probs": True,
                                                "bf16": False, "heldout": "data/prepared/preference_validation.jsonl"}},
                         "checkpoints": {"every_steps": 0, "every_minutes": 0, "keep": 1, "dir": "checkpoints"}},
               base=ROOT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DIST": "ddp", "NPROC": "2", "MASTER_PORT": str(free_port())}
    run = subprocess.run([sys.executable, "-m", "medforge.launch", "stages.dpo", *stage_args("dpo")], cwd=workdir,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    metrics = json.loads((workdir / "metrics/dpo.json").read_text())
    assert metrics["steps"] == 2 and metrics["train_examples"] == len(pairs)
