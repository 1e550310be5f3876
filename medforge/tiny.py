"""The built-in tiny model: a random-initialised causal LM with a byte-level BPE tokenizer trained on a corpus, the
chat template the tiny default trains with (ChatML, tools as Qwen2.5 renders them). The `base` stage builds it;
tests and benchmarks build their own.
"""
from __future__ import annotations

from pathlib import Path

from medforge.modeling import TinyParams

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML; <|im_end|>, the eos, ends each turn: the assistant's is trained on (medforge.chat finds its tokens). Tool
# use as Qwen2.5 renders it: the tools' schemas in the system turn, each call as <tool_call> JSON in the assistant's
# turn, each result in a turn of its own (role tool).
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n<tools>' }}{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (tools and loop.first and message['role'] == 'system') %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] }}"
    "{%- for call in message.tool_calls or [] %}"
    "{{- '<tool_call>\\n{\"name\": \"' + call['function']['name'] + '\", \"arguments\": ' }}"
    "{{- (call['function']['arguments'] | tojson) + '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def train_tokenizer(tp: TinyParams, texts):
    """Byte-level BPE with GPT-2's pre-tokenizer: llama.cpp's converter knows this layout."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=tp.vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHAT_TEMPLATE, model_max_length=tp.max_position_embeddings)


def build_tiny(tp: TinyParams, texts, out: Path, dtype=None, device: str = "cpu") -> None:
    """A random-initialised `tp.architecture` model with a BPE tokenizer trained on `texts`, saved to `out`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig
    tokenizer = train_tokenizer(tp, texts)
    eos, pad = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    config = AutoConfig.for_model(
        tp.architecture, vocab_size=len(tokenizer), hidden_size=tp.hidden_size,
        intermediate_size=tp.intermediate_size, num_hidden_layers=tp.num_layers, num_attention_heads=tp.num_heads,
        num_key_value_heads=tp.num_kv_heads, max_position_embeddings=tp.max_position_embeddings,
        tie_word_embeddings=tp.tie_word_embeddings, bos_token_id=None, eos_token_id=eos, pad_token_id=pad)
    torch.manual_seed(tp.seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad, max_new_tokens=128)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
