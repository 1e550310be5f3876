"""The precision policy, each code path forced: `bf16: auto` is bf16 on a GPU that has it and fp32 on every CPU,
AVX512-BF16 or not, so the same commit and params train in the same precision on any x86-64 CPU."""
import pytest
import torch

from medforge import params
from medforge.train import training_args, use_bf16


@pytest.mark.parametrize("cpu_has_bf16", [True, False])
def test_auto_is_fp32_on_every_cpu(monkeypatch, cpu_has_bf16):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: cpu_has_bf16, raising=False)
    assert use_bf16("auto") is False
    assert training_args(params.load("sft"), "out")["bf16"] is False


@pytest.mark.parametrize("gpu_has_bf16", [True, False])
def test_auto_follows_the_gpu(monkeypatch, gpu_has_bf16):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: gpu_has_bf16)
    assert use_bf16("auto") is gpu_has_bf16


def test_an_explicit_setting_wins(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert use_bf16(True) is True and use_bf16(False) is False
