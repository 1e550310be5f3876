"""GPTQ: GPTQModel quantizes the tiny model on the CPU, calibrated on chats; transformers loads the result as
quantized layers (through optimum + gptqmodel) and its outputs stay close to the full-precision model's (logit
correlation 0.97 measured on these random weights, 0.998 on the trained tiny default)."""
import json

import pytest
import torch

from medforge import params
from medforge.modeling import load_model, load_tokenizer
from stages.gptq import quantize

MP = params.load("model")
from tests.conftest import CORPUS

PROMPT = "高血压应该挂哪个科？ Which department treats hypertension?"


@pytest.fixture(scope="module")
def chats(tmp_path_factory):
    path = tmp_path_factory.mktemp("calibration") / "sft.jsonl"
    lines = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
             for q, a in zip(CORPUS, CORPUS[1:] + CORPUS[:1])]
    path.write_text("\n".join(json.dumps(line, ensure_ascii=False) for line in lines * 8) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gptq_dir(tiny_model_dir, chats, tmp_path_factory):
    out = tmp_path_factory.mktemp("gptq") / "model"
    metrics = quantize(tiny_model_dir, out, params.load("gptq", bits=4, group_size=128, calibration=str(chats),
                                                        calibration_samples=32))
    assert metrics["calibration_texts"] == 32 and metrics["bytes"] > 0
    return out


def logits(model, tokenizer):
    with torch.no_grad():
        return model(**tokenizer(PROMPT, return_tensors="pt")).logits[0].float()


def test_transformers_loads_quantized_layers_with_close_outputs(tiny_model_dir, gptq_dir):
    config = json.loads((gptq_dir / "config.json").read_text())["quantization_config"]
    assert (config["quant_method"], config["bits"], config["group_size"]) == ("gptq", 4, 128)
    reference = load_model(tiny_model_dir, MP).eval()
    quantized = load_model(gptq_dir, MP).eval()
    proj = quantized.model.layers[0].mlp.down_proj
    assert not isinstance(proj, torch.nn.Linear), f"expected a GPTQ kernel, got {type(proj).__name__}"
    assert quantized.get_memory_footprint() < 0.6 * reference.get_memory_footprint()
    tokenizer = load_tokenizer(gptq_dir, MP)
    expected, got = logits(reference, tokenizer), logits(quantized, tokenizer)
    correlation = torch.corrcoef(torch.stack([expected.flatten(), got.flatten()]))[0, 1]
    assert correlation > 0.95, f"4-bit logits correlate only {correlation:.3f} with full precision's"
    assert not torch.equal(got, expected)  # the layers really run quantized


def test_unsupported_bits_name_the_choices(tiny_model_dir, tmp_path):
    with pytest.raises(SystemExit, match="gptq.bits: GPTQ supports 2, 3, 4 or 8 bits, got 5"):
        quantize(tiny_model_dir, tmp_path / "out", params.load("gptq", bits=5))


def test_checkpoint_has_the_standard_gptq_layout(gptq_dir):
    """The tensors GPTQ loaders (transformers via gptqmodel, vLLM's gptq/gptq_marlin) read, in the v1 format: per
    linear layer int32 qweight [in/8, out], int32 qzeros [in/group, out/8], fp16 scales [in/group, out], g_idx."""
    from safetensors import safe_open
    config = json.loads((gptq_dir / "quantize_config.json").read_text())
    assert (config["checkpoint_format"], config["desc_act"], config["sym"]) == ("gptq", False, True)
    with safe_open(gptq_dir / "model.safetensors", "pt") as f:
        shapes = {k: (f.get_slice(k).get_dtype(), f.get_slice(k).get_shape()) for k in f.keys()}
    prefix = "model.layers.1.mlp.down_proj"  # 256 inputs -> 256 outputs in the tiny model
    assert shapes[f"{prefix}.qweight"] == ("I32", [32, 256])
    assert shapes[f"{prefix}.qzeros"] == ("I32", [2, 32])
    assert shapes[f"{prefix}.scales"] == ("F16", [2, 256])
    assert shapes[f"{prefix}.g_idx"] == ("I32", [256])
    assert not any(k.endswith("proj.weight") for k in shapes)  # every linear layer of the blocks is quantized
