"""Stage `merge@STAGE`: fold a stage's LoRA adapter into its base (peft merge_and_unload) -> standalone HF model.

    python -m stages.merge models/dpo models/merged/dpo

The output carries the tokenizer, chat template and generation config; a full-fine-tuned source is re-saved as is.
"""
from __future__ import annotations

import argparse

from medforge.io import atomic_path
from medforge.modeling import load_model, load_tokenizer, model_params


def merge(source: str, out: str) -> None:
    mp = model_params()
    model = load_model(source, mp)
    with atomic_path(out, directory=True) as tmp:
        model.save_pretrained(tmp)
        load_tokenizer(source, mp).save_pretrained(tmp)
    print(f"merged {source} -> {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("out")
    args = parser.parse_args()
    merge(args.source, args.out)
