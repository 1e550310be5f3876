import os
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

CORPUS = [
    "Hypertension is a condition of the cardiovascular system. Patients are seen in cardiology.",
    "高血压是心血管系统的疾病。患者通常在心内科就诊。",
    "I have fever, cough and a sore throat. What should I do?",
    "我有发热、咳嗽和咽痛，我该怎么办？请立即去急诊。",
    "Seek urgent care if you notice chest pain or fainting.",
]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama + BPE tokenizer built exactly as the `base` stage builds it."""
    from medforge import params
    from medforge.tiny import build_tiny
    out = tmp_path_factory.mktemp("tiny")
    tiny = replace(params.load("model").tiny, vocab_size=600, hidden_size=256, intermediate_size=256, num_layers=2,
                   num_heads=4, num_kv_heads=2, max_position_embeddings=256)
    build_tiny(tiny, CORPUS * 20, out)
    return out


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory):
    """The same kind of tokenizer and size under the Qwen2 architecture (as `make bench` builds its model)."""
    from bench.throughput import build_model
    from medforge import params
    out = tmp_path_factory.mktemp("qwen2")
    build_model(replace(params.load("bench").model, vocab_size=600, hidden_size=256, intermediate_size=256,
                        num_layers=2, num_heads=4, num_kv_heads=2, max_position_embeddings=256), CORPUS * 20, out)
    return out


@pytest.fixture(scope="session")
def real_family_dir(tmp_path_factory):
    """A function family -> its fixture (medforge/fixtures.py), each built once a session."""
    from medforge import fixtures
    built = {}

    def build(family: str):
        if family not in built:
            built[family] = fixtures.build(family, tmp_path_factory.mktemp(family))
        return built[family]
    return build


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir, tmp_path_factory):
    """The tiny model as an f16 GGUF, by llama.cpp's converter as the `gguf` stage runs it."""
    from stages.gguf import convert
    out = tmp_path_factory.mktemp("gguf") / "model-f16.gguf"
    convert(tiny_model_dir, out)
    return out


@pytest.fixture(scope="session")
def start_server():
    """Start `python -m serve` on a free loopback port; yields a function (model, *flags) -> base URL."""
    from contextlib import ExitStack

    from bench.serving import running
    with ExitStack() as stack:
        yield lambda model, *flags: stack.enter_context(running(model, *flags))


@pytest.fixture(scope="session")
def repo(tmp_path_factory):
    """The DVC pipeline run once on a shrunken tiny configuration, in a repository of its own (tests/pipeline.py)."""
    from tests.pipeline import make_repo
    return make_repo(tmp_path_factory.mktemp("repo"))
