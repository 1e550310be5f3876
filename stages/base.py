"""Stage `base`: the starting model.

`model.base: tiny` builds a small random-initialised Llama with a byte-level BPE tokenizer trained on the
prepared corpus (medforge/tiny.py); dimensions are multiples of 256 so GGUF k-quants apply. Any other value is a
Hugging Face id or a local path, loaded with from_pretrained and saved (safetensors) so DVC pins the exact weights.
"""
from __future__ import annotations

import json
from pathlib import Path

from medforge import modelcard, provenance
from medforge.io import atomic_path, read_jsonl
from medforge.modeling import load_model, load_tokenizer, model_params
from medforge.paths import stage_paths
from medforge.tiny import build_tiny


def corpus_texts(corpus: list[Path]):
    for path in corpus:
        for _, record in read_jsonl(path):
            yield record.get("text") or "\n".join([json.dumps(record.get("tools", ""), ensure_ascii=False)] + [
            m["content"] + json.dumps(m.get("tool_calls", ""), ensure_ascii=False) for m in record["messages"]])


def main() -> None:
    paths = stage_paths("corpus*", "out")  # corpus: what a tiny model's tokenizer is trained on
    mp = model_params()
    with atomic_path(paths.out, directory=True) as tmp:
        if mp.base == "tiny":
            build_tiny(mp.tiny, corpus_texts(paths.corpus), tmp)
        else:
            load_model(mp.base, mp).save_pretrained(tmp)
            load_tokenizer(mp.base, mp).save_pretrained(tmp)
        tiny = mp.base == "tiny"
        record = provenance.write(tmp, None if tiny else mp.base, **({"seed": mp.tiny.seed} if tiny else {}))
        modelcard.write(tmp, "base", record)
    print(f"wrote {paths.out}")


if __name__ == "__main__":
    main()
