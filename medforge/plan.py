"""Peak GPU memory and speed of each training stage the pipeline runs, estimated from params.yaml before renting a
GPU, with the knob to turn when a stage does not fit: `make plan GPU=l4-24g` (or `GPU_GB=24`; NPROC and DIST as for
training).

The method, per GPU (docs/plan.md compares it with the seed project's table):
- weights: bf16, 2 bytes a parameter; QLoRA: NF4 linear layers with double-quantised scales, 0.516 bytes, the
  embeddings and LM head in bf16.
- trained state: full fine-tuning keeps a bf16 gradient and AdamW's two moments in the weights' dtype (6 bytes a
  parameter); under DeepSpeed (DIST=zero2/zero3) an fp32 master copy and fp32 moments plus the bf16 gradient
  (14 bytes), sharded over NPROC (zero3 shards the weights too). LoRA adapters are fp32: 16 bytes a parameter.
- activations (bf16, FlashAttention/SDPA: nothing quadratic in the length), per token and layer: 10h + 3kv + 4i
  values saved for the backward pass (+ 6h + i for LoRA's dropout on every linear layer); with gradient
  checkpointing, each layer's input (h) plus one layer recomputed. Preference pairs count chosen and rejected.
- logits: batch x length x vocabulary at 10 bytes (bf16 logits, fp32 log-softmax and its gradient), unless the
  LM head is fused (TRL's DPO and KTO; pt and sft with chunked_lm_head, on by default on a GPU).
- a second model for the reference of full-fine-tuned DPO/KTO unless its log-probabilities are precomputed.
- 1 GiB of CUDA context and allocator slack.
Speed: training FLOPs per token (forward 2N, backward 4N for full and 2N for frozen weights, +2N recomputed with
checkpointing, + attention) at an assumed 40% of the GPU's dense bf16 peak. An estimate, not a measurement.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from medforge import params

GiB = 2**30
SLACK = 1 * GiB
MFU = 0.4  # assumed fraction of the dense bf16 peak a training step reaches
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit weights, an 8-bit scale per 64, an fp32 scale per 256 scales
GPUS = {  # name: (memory GiB, dense bf16 TFLOP/s), from the vendors' data sheets
    "a10-24g": (24, 125), "l4-24g": (24, 121), "l40s-48g": (48, 362), "a100-40g": (40, 312), "a100-80g": (80, 312),
    "h100-80g": (80, 989), "h200-141g": (141, 989)}


@dataclass(frozen=True)
class Shape:
    """What memory and FLOPs depend on in a decoder-only transformer."""
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    qkv_bias: bool  # Qwen2
    qk_norm: bool  # Qwen3

    @classmethod
    def of(cls, config) -> Shape:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return cls(config.vocab_size, config.hidden_size, config.intermediate_size, config.num_hidden_layers,
                   config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads, head_dim,
                   bool(config.tie_word_embeddings), config.model_type == "qwen2" or getattr(config, "attention_bias",
                                                                                             False),
                   config.model_type == "qwen3")

    def linears(self) -> dict[str, tuple[int, int]]:
        """Each layer's linear modules: (in, out) features."""
        q, kv, h, i = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def linear_params(self) -> int:
        bias = (self.heads + 2 * self.kv_heads) * self.head_dim if self.qkv_bias else 0
        return self.layers * (sum(a * b for a, b in self.linears().values()) + bias)

    def other_params(self) -> int:
        """Embeddings, LM head and norms: what QLoRA keeps in bf16."""
        norms = self.layers * (2 * self.hidden + (2 * self.head_dim if self.qk_norm else 0)) + self.hidden
        return self.vocab * self.hidden * (1 if self.tied else 2) + norms

    def params(self) -> int:
        return self.linear_params() + self.other_params()

    def lora_params(self, r: int, targets) -> int:
        names = self.linears() if targets == "all-linear" else {t: self.linears()[t] for t in targets}
        return self.layers * sum(r * (a + b) for a, b in names.values())


# The dimensions published in the config.json of the checkpoints the presets name, for planning without the hub.
PUBLISHED = {
    "Qwen/Qwen2.5-7B-Instruct": Shape(152064, 3584, 18944, 28, 28, 4, 128, False, qkv_bias=True, qk_norm=False),
    "Qwen/Qwen2.5-1.5B-Instruct": Shape(151936, 1536, 8960, 28, 12, 2, 128, True, qkv_bias=True, qk_norm=False),
    "Qwen/Qwen3-8B": Shape(151936, 4096, 12288, 36, 32, 8, 128, False, qkv_bias=False, qk_norm=True),
    "meta-llama/Llama-3.1-8B-Instruct": Shape(128256, 4096, 14336, 32, 32, 8, 128, False, qkv_bias=False,
                                              qk_norm=False),
}


def model_shape(model) -> Shape:
    if model.base == "tiny":
        t = model.tiny
        return Shape(t.vocab_size, t.hidden_size, t.intermediate_size, t.num_layers, t.num_heads, t.num_kv_heads,
                     t.hidden_size // t.num_heads, t.tie_word_embeddings, t.architecture == "qwen2",
                     t.architecture == "qwen3")
    from transformers import AutoConfig
    try:
        return Shape.of(AutoConfig.from_pretrained(model.base, revision=model.revision,
                                                   trust_remote_code=model.trust_remote_code))
    except OSError:
        if model.base in PUBLISHED:
            return PUBLISHED[model.base]
        raise SystemExit(f"model.base {model.base}: no config.json reachable (offline?); `huggingface-cli download "
                         f"{model.base} config.json` puts it in the cache") from None


@dataclass
class Estimate:
    stage: str
    weights: float
    state: float
    activations: float
    logits: float
    reference: float
    tokens_per_second: float

    @property
    def total(self) -> float:
        return self.weights + self.state + self.activations + self.logits + self.reference + SLACK


def estimate(stage: str, p, shape: Shape, batch: int, dist: str, nproc: int, tflops: float) -> Estimate:
    n = shape.params()
    lora = p.finetuning in ("lora", "qlora")
    weights = 2 * n if p.finetuning != "qlora" else NF4_BYTES * shape.linear_params() + 2 * shape.other_params()
    if lora:
        trained = shape.lora_params(p.lora.r, p.lora.target_modules)
        state = 16 * trained
    else:
        trained = n
        state = (14 if dist.startswith("zero") else 6) * n
        if dist.startswith("zero"):
            state /= nproc
    if dist.startswith("zero3"):  # frozen weights are sharded too
        weights /= nproc
    # a preference method's class attributes say what one step holds (medforge.preference.PreferenceParams)
    sequences = batch * (2 if getattr(p, "paired", False) else 1)
    tokens = sequences * p.max_length
    h, kv, i = shape.hidden, shape.kv_heads * shape.head_dim, shape.intermediate
    per_layer = 10 * h + 3 * kv + 4 * i + (6 * h + i if lora and p.lora.dropout > 0 else 0)
    if p.gradient_checkpointing:
        activations = 2 * tokens * (shape.layers * h + per_layer)
    else:
        activations = 2 * tokens * shape.layers * per_layer
    fused = getattr(p, "chunked_logprobs", False) or getattr(p, "chunked_lm_head", False) in ("auto", True)
    logits = 0 if fused or stage == "rm" else 10 * tokens * shape.vocab  # rm: a one-output head
    reference = weights if getattr(p, "reference", False) and not lora and not p.precompute_ref_log_probs else 0
    body = n - shape.other_params() + shape.vocab * shape.hidden  # the LM head's matmul counts, the lookup does not
    flops = (2 + (4 if not lora else 2) + (2 if p.gradient_checkpointing else 0)) * body
    flops += 6 * shape.layers * p.max_length * shape.heads * shape.head_dim  # causal attention, forward + backward
    if reference:
        flops += 2 * body
    return Estimate(stage, weights, state, activations, logits, reference, tflops * 1e12 * MFU / flops)


def training_stages(path) -> list[str]:
    pipeline, sft = params.load("pipeline", path), params.load("sft", path)
    stages = (["pt"] if Path(sft.init).name == "pt" else []) + ["sft"]  # sft starts from the pt stage's model
    return stages + (["rm", "ppo"] if pipeline.align == "ppo" else [pipeline.align])


GENERATING = {"ppo", "grpo"}  # memory follows the prompts' lengths and generation: not modelled here


def advice(stage: str, p, fits) -> str:
    """The first knob that makes `stage` (its params.yaml key: `preference.dpo`) fit, given `fits(batch, p)`."""
    if not p.gradient_checkpointing and fits(p.batch_size, _with(p, gradient_checkpointing=True)):
        return f"set {stage}.gradient_checkpointing: true"
    effective = p.batch_size * p.gradient_accumulation_steps
    for batch in range(p.batch_size - 1, 0, -1):
        if effective % batch == 0 and fits(batch, p):
            return (f"set {stage}.batch_size: {batch} and gradient_accumulation_steps: {effective // batch} "
                    f"(the same effective batch)")
    if p.finetuning == "full":
        return f"set {stage}.finetuning: lora (or qlora), or shard it: DIST=zero3 with more GPUs (NPROC)"
    if p.finetuning == "lora":
        return f"set {stage}.finetuning: qlora"
    return f"lower {stage}.max_length ({p.max_length}) or use a bigger GPU"


def _with(p, **changes):
    return dataclasses.replace(p, **changes)


def plan(path, memory: float, tflops: float, dist: str, nproc: int) -> list[tuple[str, object, Estimate | None, str]]:
    """(stage, its params, its estimate, "yes" or the knob to turn) for each training stage of params.yaml at `path`;
    no estimate for the generating stages."""
    shape = model_shape(params.load("model", path))
    rows = []
    for stage in training_stages(path):
        p = params.load(stage, path)
        if stage in GENERATING:
            rows.append((stage, p, None, "not estimated: its memory follows prompt lengths and generation"))
            continue
        e = estimate(stage, p, shape, p.batch_size, dist, nproc, tflops)
        fits = lambda b, q: estimate(stage, q, shape, b, dist, nproc, tflops).total <= memory  # noqa: E731
        rows.append((stage, p, e, "yes" if e.total <= memory else "NO: " + advice(params.key_of(stage, path), p, fits)))
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", default="a100-80g", choices=sorted(GPUS), help="its memory and bf16 peak")
    ap.add_argument("--gpu-gb", type=float, help="GPU memory in GiB instead of the --gpu's")
    ap.add_argument("--params", default=params.PARAMS_FILE)
    args = ap.parse_args(argv)
    memory, tflops = GPUS[args.gpu]
    memory = (args.gpu_gb or memory) * GiB
    dist, nproc = os.environ.get("DIST", "single"), int(os.environ.get("NPROC", "1"))
    model = params.load("model", args.params)
    print(f"{model.base}: {model_shape(model).params() / 1e6:,.0f}M parameters; {memory / GiB:g} GiB, "
          f"{args.gpu}'s speed; DIST={dist} NPROC={nproc}. Estimates, not measurements (medforge/plan.py says how); "
          f"GiB per GPU:")
    print(f"{'stage':6} {'method':6} {'weights':>8} {'state':>7} {'activ.':>7} {'logits':>7} {'ref':>5} "
          f"{'total':>7}  {'tokens/s':>9}  fits")
    for stage, p, e, verdict in plan(args.params, memory, tflops, dist, nproc):
        numbers = "" if e is None else (
            f"{e.weights / GiB:8.1f} {e.state / GiB:7.1f} {e.activations / GiB:7.1f} {e.logits / GiB:7.1f} "
            f"{e.reference / GiB:5.1f} {e.total / GiB:7.1f}  {e.tokens_per_second:9,.0f}  ")
        print(f"{stage:6} {p.finetuning:6} {numbers}{verdict}")


if __name__ == "__main__":
    main()
