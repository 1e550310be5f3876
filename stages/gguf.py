"""Stage `gguf`: a merged model -> GGUF files for llama.cpp (params.yaml `gguf`).

    python -m stages.gguf --source DIR --out DIR --metrics FILE
        -> OUT/model-<type>.gguf for every type in `gguf.types`, OUT/tokenizer (the source's HF tokenizer, for
           evaluation)

Conversion is llama.cpp's own `convert_hf_to_gguf.py` from the llama-cpp-python source the lock pins (the Makefile
unpacks it to .venv/llama.cpp), so the files match the runtime that reads them; it writes f16 with the tokenizer and
chat template inside. Each other type comes from llama.cpp's quantizer (`llama_model_quantize`) on that f16 file.
"""
from __future__ import annotations

import ctypes
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from medforge import params, provenance
from medforge.io import atomic_path
from medforge.modeling import load_tokenizer, model_params
from medforge.paths import stage_paths

CONVERTER = Path(sys.prefix) / "llama.cpp"


@dataclass
class Params:
    types: list[str]  # f16 + llama.cpp ftypes


def gpt2_byte_level(model_dir: Path) -> bool:
    """True when tokenizer.json pre-tokenizes exactly like GPT-2 (byte-level with its split regex)."""
    path = model_dir / "tokenizer.json"
    if not path.exists():
        return False
    pre = json.loads(path.read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    return pre.get("type") == "ByteLevel" and pre.get("use_regex", True)


def convert(source: Path, out: Path) -> None:
    """llama.cpp's converter, in this process. It recognises a BPE tokenizer by hashing the tokens of a test string,
    so a vocabulary trained here is never known: when that happens and the pre-tokenizer is GPT-2's byte-level
    one, it is declared "gpt-2" (llama.cpp then splits text exactly as the HF tokenizer does; tests check it)."""
    if not (CONVERTER / "convert_hf_to_gguf.py").exists():
        raise SystemExit(f"{CONVERTER}/convert_hf_to_gguf.py missing: run `make setup` (it unpacks llama.cpp's "
                         f"converter from the pinned llama-cpp-python source)")
    sys.path[:0] = [str(CONVERTER), str(CONVERTER / "gguf-py")]
    # The converter needs the gguf-py it ships with (ahead of PyPI's gguf of the same version number, which
    # transformers imports to read GGUF vocabularies: medforge.fixtures); forget that one if it was loaded.
    for name in [m for m in sys.modules if m.split(".")[0] == "gguf"]:
        if not str(getattr(sys.modules[name], "__file__", "")).startswith(str(CONVERTER)):
            del sys.modules[name]
    import convert_hf_to_gguf
    from conversion.base import TextModel

    recognise = TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return recognise(self, tokenizer)
        except NotImplementedError:
            if gpt2_byte_level(Path(self.dir_model)):  # transformers swaps in Qwen2's digit-splitting pre-tokenizer
                return "qwen2" if type(tokenizer).__name__.startswith("Qwen2Tokenizer") else "gpt-2"
            raise

    TextModel.get_vocab_base_pre = get_vocab_base_pre
    argv, sys.argv = sys.argv, ["convert_hf_to_gguf.py", str(source), "--outfile", str(out), "--outtype", "f16"]
    try:
        convert_hf_to_gguf.main()
    finally:
        sys.argv = argv


def quantize(f16: Path, out: Path, kind: str) -> None:
    import llama_cpp
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind.upper()}", None)
    if ftype is None:
        known = sorted(n.removeprefix("LLAMA_FTYPE_MOSTLY_").lower() for n in dir(llama_cpp)
                       if n.startswith("LLAMA_FTYPE_MOSTLY_"))
        raise SystemExit(f"gguf.types: unknown type {kind!r} (llama.cpp knows: {', '.join(known)})")
    qp = llama_cpp.llama_model_quantize_default_params()
    qp.ftype = ftype
    if llama_cpp.llama_model_quantize(str(f16).encode(), str(out).encode(), ctypes.byref(qp)) != 0:
        raise SystemExit(f"llama.cpp could not quantize {f16} to {kind}")


def main() -> None:
    files = stage_paths("source", "out", "metrics")
    source, p = files.source, params.load("gguf")
    sizes = {}
    with atomic_path(files.out, directory=True) as tmp:
        f16 = tmp / "model-f16.gguf"
        convert(source, f16)
        for kind in p.types:
            if kind != "f16":
                quantize(f16, tmp / f"model-{kind}.gguf", kind)
        if "f16" not in p.types:
            f16.unlink()
        # the tokenizer renders eval prompts as the source model does
        load_tokenizer(source, model_params()).save_pretrained(tmp / "tokenizer")
        sizes = {path.stem.removeprefix("model-"): path.stat().st_size for path in sorted(tmp.glob("*.gguf"))}
        provenance.write(tmp, parent=source, precision=", ".join(p.types))
    provenance.write_metrics(files.metrics, {"source": str(source), "bytes": sizes,
                                             **({"q4_k_m_vs_f16": round(sizes["q4_k_m"] / sizes["f16"], 4)}
                                                if {"q4_k_m", "f16"} <= set(sizes) else {})},
                             precision=", ".join(p.types))
    print(json.dumps(sizes))


if __name__ == "__main__":
    main()
