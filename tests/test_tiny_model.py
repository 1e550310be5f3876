import json

from tokenizers import Tokenizer

from medforge import params
from medforge.modeling import load_model, load_tokenizer
from tests.conftest import CORPUS

MP = params.load("model")


def test_tokenizer_loads_unchanged_through_transformers(tiny_model_dir):
    raw = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    tok = load_tokenizer(tiny_model_dir, MP)
    for text in CORPUS + ["  mixed 中英文 text\n\nwith 😀 and 罕见字"]:
        assert tok.encode(text) == raw.encode(text).ids
        assert tok.decode(tok.encode(text)) == text


def test_chat_template_marks_assistant_turns_through_their_stop_token(tiny_model_dir):
    from medforge import chat
    tok = load_tokenizer(tiny_model_dir, MP)
    out = chat.tokenize(tok, [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    masked = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert masked == tok.encode("a<|im_end|>")


def test_dimensions_fit_gguf_k_quants(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["hidden_size"] % 256 == 0 and config["intermediate_size"] % 256 == 0
    model = load_model(tiny_model_dir, MP)
    gen = model.generation_config
    tok = load_tokenizer(tiny_model_dir, MP)
    assert tok.convert_tokens_to_ids("<|im_end|>") in gen.eos_token_id
    assert (tiny_model_dir / "model.safetensors").exists()
