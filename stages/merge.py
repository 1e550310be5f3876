"""Stage `merge@STAGE`: fold a stage's LoRA adapter into the model it was trained on, and that model's adapter into
its own, down to a full model (peft merge_and_unload) -> standalone HF model.

    python -m stages.merge models/dpo models/merged/dpo

The output carries the tokenizer, chat template and generation config; a full-fine-tuned source is copied as is.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from medforge import modelcard, provenance
from medforge.io import atomic_path
from medforge.modeling import is_adapter, load_model, load_tokenizer, model_params


def merge(source: str, out: str) -> None:
    with atomic_path(out, directory=True) as tmp:
        if is_adapter(source):
            mp = model_params()
            load_model(source, mp).save_pretrained(tmp)
            load_tokenizer(source, mp).save_pretrained(tmp)
        else:  # a full fine-tune is already standalone: copying it skips loading transformers (5 s)
            shutil.copytree(source, tmp, dirs_exist_ok=True)
        stage = Path(source).name  # the card describes the stage whose model this is: its params and metrics
        metrics = Path(f"metrics/{stage}.json")
        modelcard.write(tmp, stage, provenance.write(tmp, parent=source),
                        json.loads(metrics.read_text()) if metrics.exists() else None)
    print(f"merged {source} -> {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("out")
    args = parser.parse_args()
    merge(args.source, args.out)
