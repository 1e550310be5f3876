"""Stage `merge`: fold a LoRA adapter into its base (peft merge_and_unload) -> standalone HF model directory.

The output carries the tokenizer, chat template and generation config; a full-fine-tuned source is copied as is.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medforge import params
from medforge.io import atomic_path
from medforge.modeling import load_model, load_tokenizer, model_params


@dataclass
class Params:
    source: str = "models/sft"


def main() -> None:
    p = params.load("merge", Params)
    out = Path("models/merged")
    mp = model_params()
    model = load_model(p.source, mp)
    with atomic_path(out, directory=True) as tmp:
        model.save_pretrained(tmp)
        load_tokenizer(p.source, mp).save_pretrained(tmp)
    print(f"merged {p.source} -> {out}")


if __name__ == "__main__":
    main()
