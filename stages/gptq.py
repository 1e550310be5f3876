"""Stage `gptq`: a merged model -> GPTQ (params.yaml `gptq`) with GPTQModel, calibrated on the project's SFT chats.

    python -m stages.gptq --source DIR --out DIR --metrics FILE
        -> OUT: an HF directory in the standard GPTQ format (transformers loads it through optimum + gptqmodel,
           vLLM serves it)

GPTQModel is the maintained successor of auto-gptq, which is archived and no longer imports under transformers 5.
It quantizes on the GPU where there is one and on the CPU otherwise.
"""
from __future__ import annotations

import contextlib
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from medforge import params, provenance
from medforge.formats import read_canonical, to_chat
from medforge.io import atomic_path
from medforge.modeling import load_tokenizer, model_params
from medforge.paths import stage_paths


@dataclass
class Params:
    bits: int
    group_size: int  # columns sharing one scale; must divide the layers' input sizes
    desc_act: bool  # act-order: slower kernels, rarely worth it at 4 bits
    sym: bool
    calibration: str
    calibration_samples: int  # chats rendered with the model's chat template
    seed: int


def calibration_texts(p: Params, tokenizer) -> list[str]:
    chats = read_canonical(p.calibration, to_chat)
    random.Random(p.seed).shuffle(chats)
    return [tokenizer.apply_chat_template(c["messages"], tokenize=False) for c in chats[: p.calibration_samples]]


def quantize(source: Path, out: Path, p: Params) -> dict:
    """Quantize `source` into the directory `out` (written atomically); returns the stage's metrics."""
    if p.bits not in (2, 3, 4, 8):
        raise SystemExit(f"gptq.bits: GPTQ supports 2, 3, 4 or 8 bits, got {p.bits}")
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(min(os.cpu_count() or 1, 2)))  # its CPU pool needs a size
    from gptqmodel import GPTQModel, QuantizeConfig

    texts = calibration_texts(p, load_tokenizer(source, model_params()))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    config = QuantizeConfig(bits=p.bits, group_size=p.group_size, desc_act=p.desc_act, sym=p.sym, device=device)
    start = time.perf_counter()
    absolute, out = Path(source).resolve(), Path(out).resolve()
    with atomic_path(out, directory=True) as tmp:
        with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):  # it writes ./logs/*.log
            model = GPTQModel.load(str(absolute), config)
            model.quantize(texts)
            model.save(str(tmp))  # with quant_log.csv, the per-layer quantization error
        provenance.write(tmp, parent=source, precision=f"GPTQ {p.bits}-bit")
    return {"source": str(source), "bits": p.bits, "group_size": p.group_size, "calibration_texts": len(texts),
            "bytes": sum(f.stat().st_size for f in out.glob("*.safetensors")),
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    files = stage_paths("source", "out", "metrics")
    metrics = quantize(files.source, files.out, params.load("gptq"))
    provenance.write_metrics(files.metrics, metrics, precision=f"GPTQ {metrics['bits']}-bit")
    print(f"GPTQ {metrics['bits']}-bit of {files.source} -> {files.out} ({metrics['bytes'] / 2**20:.1f} MB, "
          f"{metrics['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
