"""What a model directory was made from: provenance.json, written beside the weights of every model stage output.

    {"weights_sha256": "...", "parent": {"path": "models/sft", "weights_sha256": "..."}}

`parent` is the model the output was trained, merged or copied from (its path as params.yaml names it, and its
fingerprint; a Hugging Face id has none). A LoRA adapter only means something on the exact model it was trained
on, so loading one (medforge.modeling.load_model) asks `parent_of` for that model: present and unchanged, or a
LineageError. Chains resolve one link at a time: LoRA DPO -> LoRA SFT -> LoRA PT -> base.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

FILE = "provenance.json"


class LineageError(RuntimeError):
    pass


def weights_sha256(directory: str | Path) -> str:
    """One sha256 over the directory's safetensors files (names and bytes, in name order)."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).glob("*.safetensors")):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
    return digest.hexdigest()


def read(directory: str | Path) -> dict:
    path = Path(directory) / FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def fingerprint(model: str | Path) -> str | None:
    """A local model directory's weights fingerprint (as its provenance.json records it, else hashed now);
    None for a model that is not a local directory (a Hugging Face id)."""
    if not Path(model).is_dir():
        return None
    return read(model).get("weights_sha256") or weights_sha256(model)


def write(directory: str | Path, parent: str | Path | None) -> None:
    """Record the weights in `directory` and the model they were made from (None: made from nothing, e.g. tiny)."""
    record = {"weights_sha256": weights_sha256(directory)}
    if parent is not None:
        record["parent"] = {"path": str(parent), "weights_sha256": fingerprint(parent)}
    (Path(directory) / FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def parent_of(adapter: str | Path) -> str | None:
    """The model a LoRA adapter was trained on, checked to be there with the weights it was trained on; None for an
    adapter without provenance.json (trained elsewhere: its adapter_config.json is all there is to go by)."""
    parent = read(adapter).get("parent")
    if parent is None:
        return None
    path, trained_on = parent["path"], parent["weights_sha256"]
    if trained_on is None:  # a hub id
        return path
    if not Path(path).is_dir():
        raise LineageError(f"{adapter}: this LoRA adapter was trained on {path}, which no longer exists; restore "
                           f"it (dvc pull / dvc checkout) or retrain the adapter (dvc repro)")
    now = fingerprint(path)
    if now != trained_on:
        raise LineageError(f"{adapter}: this LoRA adapter was trained on {path} with weights {trained_on[:12]}, but "
                           f"{path} now holds {now[:12]}; retrain the adapter on it (dvc repro) or restore that model")
    return path
