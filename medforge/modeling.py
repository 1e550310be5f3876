"""Model and tokenizer loading: dtype, device, quantization, LoRA targets, adapters. One place for all stages."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from medforge import params, provenance


@dataclass
class TinyParams:
    architecture: str  # any transformers model type with the usual config fields (llama, qwen2, ...)
    tie_word_embeddings: bool
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    max_position_embeddings: int
    seed: int


@dataclass
class ModelParams:
    base: str
    revision: str
    trust_remote_code: bool
    dtype: Literal["auto", "float32", "bfloat16", "float16"]
    attn_implementation: str  # auto: varlen (medforge/attention.py), GPU or CPU
    tiny: TinyParams


def model_params() -> ModelParams:
    return params.load("model")


def torch_dtype(name: str) -> torch.dtype:
    """`auto`: bf16 on a GPU that supports it, else fp32 (fp16/bf16 training on CPU is slow or unsupported)."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, name)


def attn_implementation(name: str) -> str:
    """transformers' attention name; registers medforge's padding-free `varlen` attention when it is chosen."""
    if name == "auto":
        name = "varlen"
    if name == "varlen":
        from medforge import attention
        attention.register()
    return name


def device_map() -> dict | None:
    """This process's GPU (LOCAL_RANK under accelerate/torchrun); None under ZeRO-3, which shards the weights itself."""
    from transformers.integrations import is_deepspeed_zero3_enabled
    return None if is_deepspeed_zero3_enabled() else {"": int(os.environ.get("LOCAL_RANK", 0))}


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def load_tokenizer(path: str | Path, mp: ModelParams):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(path, revision=mp.revision, trust_remote_code=mp.trust_remote_code)
    if tokenizer.pad_token is None:  # batching needs one; many base models ship without (TRL does the same)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(bits: int | None):
    """bitsandbytes config for QLoRA (4-bit NF4) or 8-bit loading; None for full precision."""
    if not bits:
        return None
    from transformers import BitsAndBytesConfig
    if bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch_dtype("auto"))
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"quantization bits must be 4 or 8, got {bits}")


def load_model(path: str | Path, mp: ModelParams, bits: int | None = None, head: str = "causal_lm"):
    """Load a model directory, or an adapter directory merged into the model it was trained on (itself perhaps an
    adapter: every delta below it is merged in; medforge.provenance checks each link).

    `head`: "causal_lm", or "reward" (a sequence-classification head with one output, for reward models).
    Only safetensors weights are accepted; remote code only when params allow it.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    kwargs = dict(dtype=torch_dtype(mp.dtype), revision=mp.revision, trust_remote_code=mp.trust_remote_code,
                  use_safetensors=True, attn_implementation=attn_implementation(mp.attn_implementation))
    if bits:  # an explicit None would also drop the quantization a checkpoint declares (GPTQ)
        kwargs["quantization_config"] = quantization_config(bits)
    if torch.cuda.is_available():
        kwargs["device_map"] = device_map()
    if not is_adapter(path):
        auto = AutoModelForSequenceClassification if head == "reward" else AutoModelForCausalLM
        return without_bf16_cpu_kernel(auto.from_pretrained(path, **({"num_labels": 1} if head == "reward" else {}),
                                                            **kwargs))
    from peft import PeftConfig, PeftModel
    config = PeftConfig.from_pretrained(path)
    if head != "causal_lm":  # e.g. an SFT adapter under a new reward head: fold the weights in, whatever the task
        config.task_type = None
    base = load_model(provenance.parent_of(path) or config.base_model_name_or_path, mp, bits, head)
    merged = PeftModel.from_pretrained(base, path, config=config).merge_and_unload()
    # The model is `path` now: an adapter trained on it records `path` as its base (peft reads name_or_path).
    merged.name_or_path = merged.config.name_or_path = str(path)
    return merged.requires_grad_(not bits)  # peft froze the base; full fine-tuning from here must train it all


def without_bf16_cpu_kernel(model):
    """bitsandbytes repacks a 4-bit layer for its AVX512-BF16 kernel the first time it runs without gradients on a
    CPU that has the instruction: numbers other CPUs do not give (medforge pins one set of CPU kernels), and in
    bitsandbytes 0.50.2 the next training pass then fails ("a view of a leaf Variable ... in-place"), as when DPO
    computes its reference log-probabilities before the first step. Switched off."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model


@torch.no_grad()
def generate_replies(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int, batch_size: int = 16,
                     tools: list[list[dict] | None] | None = None) -> list[str]:
    """Greedy assistant replies to chat prompts (lists of messages; `tools`: each prompt's), batched with left
    padding."""
    model.eval()
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    tools = tools or [None] * len(prompts)
    replies = []
    try:
        for start in range(0, len(prompts), batch_size):
            end = start + batch_size
            texts = [tokenizer.apply_chat_template(m, tools=t, tokenize=False, add_generation_prompt=True)
                     for m, t in zip(prompts[start:end], tools[start:end])]
            inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)
            replies += [r.strip() for r in tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:],
                                                                  skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return replies
