"""Model and tokenizer loading: dtype, device, quantization, LoRA targets, adapters. One place for all stages."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from medforge import params


@dataclass
class TinyParams:
    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 768
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    max_position_embeddings: int = 1024
    seed: int = 0


@dataclass
class ModelParams:
    base: str = "tiny"
    revision: str = "main"
    trust_remote_code: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    attn_implementation: str = "sdpa"
    tiny: TinyParams = field(default_factory=TinyParams)


def model_params() -> ModelParams:
    return params.load("model", ModelParams)


def torch_dtype(name: str) -> torch.dtype:
    """`auto`: bf16 on a GPU that supports it, else fp32 (fp16/bf16 training on CPU is slow or unsupported)."""
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, name)


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def load_tokenizer(path: str | Path, mp: ModelParams | None = None):
    from transformers import AutoTokenizer
    mp = mp or ModelParams()
    return AutoTokenizer.from_pretrained(path, revision=mp.revision, trust_remote_code=mp.trust_remote_code)


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


def load_model(path: str | Path, mp: ModelParams | None = None, bits: int | None = None):
    """Load a causal LM from a model directory, or from an adapter directory merged into its base.

    Only safetensors weights are accepted; remote code only when params allow it.
    """
    from transformers import AutoModelForCausalLM
    mp = mp or ModelParams()
    kwargs = dict(dtype=torch_dtype(mp.dtype), revision=mp.revision, trust_remote_code=mp.trust_remote_code,
                  use_safetensors=True, attn_implementation=mp.attn_implementation,
                  quantization_config=quantization_config(bits))
    if torch.cuda.is_available():
        kwargs["device_map"] = {"": 0}
    if not is_adapter(path):
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    from peft import PeftConfig, PeftModel
    base = PeftConfig.from_pretrained(path).base_model_name_or_path
    return PeftModel.from_pretrained(load_model(base, mp, bits), path).merge_and_unload()
