"""Small random-initialised stand-ins for real chat checkpoints, built offline: the family's architecture, its real
vocabulary (llama.cpp's vocabulary-only GGUF files) and its real chat template (llama.cpp's copies of the
checkpoints' templates), with its end-of-turn, pad and bos tokens as the checkpoint sets them. Both sources ship in
the llama-cpp-python sdist that requirements.lock pins; `make setup` unpacks them into the venv's llama.cpp/models.

    python -m medforge.fixtures qwen2.5 OUT     # a model directory that `model.base: OUT` loads like the checkpoint

Hidden and MLP sizes are multiples of 256, so GGUF k-quants apply. The vocabulary (128-152k tokens) dominates the
parameter count (tied embeddings: 39M for Qwen), so keep CPU runs on them to a few steps.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(sys.prefix) / "llama.cpp" / "models"  # beside the converter (stages/gguf.py)

# Qwen2.5's special tokens after <|im_end|> (151645), in id order from 151646; the vocabulary file has placeholders
# there. Special: True where the checkpoint marks the token special (skipped when decoding).
QWEN25_ADDED = [(t, True) for t in ("<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
                                    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
                                    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")] + \
               [(t, False) for t in ("<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
                                     "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>")]
QWEN3_ADDED = QWEN25_ADDED + [(t, False) for t in ("<tool_response>", "</tool_response>", "<think>", "</think>")]


@dataclass(frozen=True)
class Family:
    architecture: str  # transformers model_type
    vocabulary: str  # llama.cpp's vocabulary-only GGUF
    template: str  # llama.cpp's copy of the checkpoint's chat template
    vocab_size: int  # the checkpoint's embedding rows
    bos: str | None
    eos: str  # the end-of-turn token: tokenizer eos, as the Instruct checkpoint sets it
    pad: str
    stop: tuple[str, ...]  # generation_config eos_token_id
    renamed: dict[int, tuple[str, bool]]  # id -> (token, special) the vocabulary file lacks
    tokenizer_class: str


FAMILIES = {
    "qwen2.5": Family("qwen2", "ggml-vocab-qwen2.gguf", "Qwen-Qwen2.5-7B-Instruct.jinja", 151936, None,
                      "<|im_end|>", "<|endoftext|>", ("<|im_end|>", "<|endoftext|>"),
                      {151646 + i: t for i, t in enumerate(QWEN25_ADDED)}, "Qwen2Tokenizer"),
    "qwen3": Family("qwen3", "ggml-vocab-qwen2.gguf", "Qwen-Qwen3-0.6B.jinja", 151936, None,
                    "<|im_end|>", "<|endoftext|>", ("<|im_end|>", "<|endoftext|>"),
                    {151646 + i: t for i, t in enumerate(QWEN3_ADDED)}, "Qwen2Tokenizer"),
    "llama3.1": Family("llama", "ggml-vocab-llama-bpe.gguf", "meta-llama-Llama-3.1-8B-Instruct.jinja", 128256,
                       "<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>",
                       ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"),
                       {128004: ("<|finetune_right_pad_id|>", True), 128008: ("<|eom_id|>", True),
                        128010: ("<|python_tag|>", True)}, "PreTrainedTokenizerFast"),
}


def build_tokenizer(family: Family, out: Path, source: Path = SOURCE):
    """The family's tokenizer from llama.cpp's vocabulary file (transformers converts it; needs PyPI `gguf`), with
    the checkpoint's added tokens named, nothing past its vocabulary, and its template and special tokens."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    if not (source / family.vocabulary).exists():
        raise SystemExit(f"{source / family.vocabulary} missing: run `make setup` (it unpacks llama.cpp's "
                         f"vocabularies and templates from the pinned llama-cpp-python source)")
    with tempfile.TemporaryDirectory() as tmp:
        AutoTokenizer.from_pretrained(source, gguf_file=family.vocabulary).save_pretrained(tmp)
        data = json.loads((Path(tmp) / "tokenizer.json").read_text(encoding="utf-8"))
    # The file fills unused ids with "[PAD<id>]" placeholders (in the vocabulary and as added tokens): the checkpoint
    # has none, and its own added tokens at some of those ids.
    real = [t for t in data["added_tokens"] if t["id"] < family.vocab_size and not t["content"].startswith("[PAD")
            and t["id"] not in family.renamed]
    data["model"]["vocab"] = {**{k: v for k, v in data["model"]["vocab"].items()
                                 if not k.startswith("[PAD") and v not in family.renamed},
                              **{token: i for i, (token, _) in family.renamed.items()}}
    real += [{"id": i, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": special} for i, (token, special) in family.renamed.items()]
    data["added_tokens"] = sorted(real, key=lambda t: t["id"])
    from tokenizers import Tokenizer, processors
    backend = Tokenizer.from_str(json.dumps(data))
    if family.bos:  # the checkpoint's tokenizer starts every text with it (the file's conversion does not)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{family.bos} $A", pair=f"{family.bos} $A {family.bos} $B",
            special_tokens=[(family.bos, backend.token_to_id(family.bos))])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=family.bos, eos_token=family.eos,
        pad_token=family.pad, chat_template=(source / "templates" / family.template).read_text(encoding="utf-8"),
        model_max_length=32768, clean_up_tokenization_spaces=False)
    tokenizer.save_pretrained(out)
    config = json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["tokenizer_class"] = family.tokenizer_class
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    return AutoTokenizer.from_pretrained(out)


def build(name: str, out: str | Path, hidden_size: int = 256, intermediate_size: int = 512, num_layers: int = 2,
          seed: int = 0, source: Path = SOURCE) -> Path:
    """The fixture of family `name` in `out`: tokenizer, random weights (bf16 safetensors, as checkpoints ship),
    generation config with the family's stop tokens."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    family, out = FAMILIES[name], Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(family, out, source)
    ids = tokenizer.convert_tokens_to_ids
    config = AutoConfig.for_model(
        family.architecture, vocab_size=family.vocab_size, hidden_size=hidden_size,
        intermediate_size=intermediate_size, num_hidden_layers=num_layers, num_attention_heads=4,
        num_key_value_heads=2, head_dim=hidden_size // 4, max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=ids(family.bos or family.pad), eos_token_id=ids(family.eos), pad_token_id=ids(family.pad),
        dtype="bfloat16")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, pad_token_id=config.pad_token_id,
                                               eos_token_id=[ids(t) for t in family.stop])
    model.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=sorted(FAMILIES))
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(build(args.family, args.out))


if __name__ == "__main__":
    main()
