"""GGUF: llama.cpp's own converter and quantizer on tiny Llama and Qwen2 models, and llama.cpp must see what
transformers sees: the same token ids (Chinese and English, digits, chat special tokens), the same chat template,
and the same logits to f16 precision."""
import pytest
import torch

from medforge import params
from medforge.modeling import load_model, load_tokenizer
from stages.gguf import convert, quantize

FP32 = params.load("model", dtype="float32")

TEXTS = [
    "Which department treats hypertension? Cardiology.",
    "高血压应该挂哪个科？心内科。如出现胸痛，请立即就医！",
    "<|im_start|>user\n我发烧了，咳嗽 3 天 (38.5°C)。<|im_end|>\n<|im_start|>assistant\n",
    "  leading spaces, tabs\tand newlines\n\n ok… “quotes” – dashes",
    "1234567 mg, 3.14 and 2026年11月23日; don't I'll WE'RE 🚀",
]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def source(request):
    """The tiny default (Llama), or the same tokenizer under Qwen2, where transformers swaps in Qwen2's own
    pre-tokenizer (the converter must then declare llama.cpp's qwen2 one)."""
    return request.getfixturevalue("tiny_model_dir" if request.param == "llama" else "tiny_qwen2_dir")


@pytest.fixture(scope="module")
def gguf_dir(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    convert(source, out / "model-f16.gguf")
    for kind in ("q8_0", "q4_k_m"):
        quantize(out / "model-f16.gguf", out / f"model-{kind}.gguf", kind)
    return out


def llama(path, **kwargs):
    from llama_cpp import Llama
    return Llama(model_path=str(path), n_ctx=256, verbose=False, **kwargs)


def test_llama_cpp_tokenizes_like_transformers(source, gguf_dir):
    hf = load_tokenizer(source, FP32)
    gguf = llama(gguf_dir / "model-f16.gguf", vocab_only=True)
    for text in TEXTS:
        assert gguf.tokenize(text.encode(), add_bos=False, special=True) == hf(text, add_special_tokens=False)[
            "input_ids"], text


def test_chat_template_travels_inside_the_gguf(source, gguf_dir):
    assert llama(gguf_dir / "model-q4_k_m.gguf", vocab_only=True).metadata["tokenizer.chat_template"] == \
        load_tokenizer(source, FP32).chat_template


def test_f16_logits_match_transformers(source, gguf_dir):
    ids = load_tokenizer(source, FP32)(TEXTS[1] + TEXTS[0], add_special_tokens=False)["input_ids"]
    model = load_model(source, FP32)
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0].numpy()
    gguf = llama(gguf_dir / "model-f16.gguf", logits_all=True)
    gguf.eval(ids)
    got = gguf.scores[: len(ids)]
    # f16 weights against fp32: at most 0.2% of the logits' range apart, the same ranking
    assert abs(got - expected).max() <= 2e-3 * (expected.max() - expected.min())  # seen: 9e-4 of a 3.2 range
    assert (got.argmax(-1) == expected.argmax(-1)).mean() >= 0.98


def test_quantized_files_shrink(gguf_dir):
    size = {kind: (gguf_dir / f"model-{kind}.gguf").stat().st_size for kind in ("f16", "q8_0", "q4_k_m")}
    assert size["q4_k_m"] < size["q8_0"] < 0.6 * size["f16"]


def test_unknown_quantization_type_names_the_choices(gguf_dir, tmp_path):
    with pytest.raises(SystemExit, match="unknown type 'q3_x'.*q4_k_m"):
        quantize(gguf_dir / "model-f16.gguf", tmp_path / "x.gguf", "q3_x")
