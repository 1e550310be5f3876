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


def kernels_of(package: str, **env) -> str:
    """The CPU kernels PyTorch runs in a fresh process that imports `package` first, as a stage's command does."""
    import os
    import subprocess
    import sys

    from medforge import CPU_KERNELS
    clean = {k: v for k, v in os.environ.items() if k not in CPU_KERNELS}
    return subprocess.run([sys.executable, "-c", f"import {package}, torch; print(torch.backends.cpu."
                           "get_cpu_capability())"], env={**clean, **env}, capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.mark.skipif("avx2" not in open("/proc/cpuinfo").read(), reason="not an x86-64 CPU with AVX2")
@pytest.mark.parametrize("package", ["stages", "eval", "medforge.launch"])
def test_stages_run_the_same_avx2_kernels_on_every_x86_cpu(package):
    """An AVX-512 CPU would otherwise run PyTorch's AVX-512 kernels, which gave other numbers (README)."""
    assert kernels_of(package) == "AVX2"


def test_the_environment_can_ask_for_other_kernels():
    assert kernels_of("stages", ATEN_CPU_CAPABILITY="default") == "DEFAULT"
