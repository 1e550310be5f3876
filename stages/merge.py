"""Stage `merge@STAGE`: fold a stage's LoRA adapter into the model it was trained on, and that model's adapter into
its own, down to a full model (peft merge_and_unload) -> standalone HF model.

    python -m stages.merge --source models/dpo --metrics metrics/dpo.json --out models/merged/dpo

The output carries the tokenizer, chat template and generation config; a full-fine-tuned source is copied as is.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from medforge import modelcard, provenance
from medforge.io import atomic_path
from medforge.modeling import is_adapter, load_model, load_tokenizer, model_params
from medforge.paths import stage_paths


def merge(source: Path, metrics: Path, out: Path) -> None:
    """`metrics`: the source stage's, for the model card."""
    trained = provenance.read(source)  # read before a full model's copy overwrites it
    with atomic_path(out, directory=True) as tmp:
        if is_adapter(source):
            mp = model_params()
            load_model(source, mp).save_pretrained(tmp)
            load_tokenizer(source, mp).save_pretrained(tmp)
        else:  # a full fine-tune is already standalone: copying it skips loading transformers (5 s)
            shutil.copytree(source, tmp, dirs_exist_ok=True)
        record = provenance.write(tmp, parent=source, **({"data": trained["data"]} if "data" in trained else {}))
        modelcard.write(tmp, source.name, record, json.loads(metrics.read_text()))
    print(f"merged {source} -> {out}")


if __name__ == "__main__":
    merge(**vars(stage_paths("source", "metrics", "out")))
