"""README.md in every model directory: a Hugging Face model card written from what the pipeline knows, so a model
pushed to a hub documents itself (base model, data and record counts, the stage's params and evaluation, provenance).
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from medforge import params

# the params.yaml `data` kind each stage's prepared files come from, and every preference method's: preference
# (grpo's prompts are its own: grpo.prompts)
DATA_KINDS = {"pt": "pretrain", "sft": "sft", "rm": "preference", "ppo": "preference"}


def lineage(record: dict) -> list[str]:
    """The chain of models an output was made from, nearest first, as far as provenance.json files reach."""
    chain, parent = [], record.get("parent")
    while parent:
        chain.append(parent["path"])
        above = Path(parent["path"]) / "provenance.json"
        parent = json.loads(above.read_text()).get("parent") if above.exists() else None
    return chain


def section(title: str, body: str) -> str:
    return f"## {title}\n\n{body.strip()}\n"


def card(stage: str, record: dict, metrics: dict | None) -> str:
    """The card of a model made by `stage` (its provenance `record`; `metrics`: the stage's own held-out metrics)."""
    raw = params.load_raw()
    methods = raw.get(params.PREFERENCE) or {}
    own = {f"{params.PREFERENCE}.{stage}": methods[stage]} if stage in methods else \
        {stage: raw[stage]} if stage in raw else {}
    chain = lineage(record)
    base = chain[-1] if chain else params.load("model").base
    header = {"base_model": base, "library_name": "transformers", "tags": ["medforge", "medical", stage]}
    files = record.get("data", {})
    data = "| file | records |\n|---|---:|\n" + "\n".join(f"| `{path}` | {n:,} |" for path, n in files.items())
    if kind := DATA_KINDS.get(stage, "preference" if stage in methods else None):
        data += f"\n\nPrepared from (`data.{kind}`): " + ", ".join(f"`{s}`" for s in raw["data"][kind])
    parts = [f"---\n{yaml.safe_dump(header, sort_keys=False, allow_unicode=True)}---\n",
             f"# medforge `{stage}`\n\nMade by the `{record.get('stage') or stage}` stage from "
             + (" <- ".join(f"`{m}`" for m in chain) if chain else f"`{base}`") + ".\n",
             *([section("Data", data)] if files else []),
             section("Params (params.yaml)", "```yaml\n" + yaml.safe_dump(
                 {**own, "model": raw["model"]}, sort_keys=False, allow_unicode=True) + "```")]
    if metrics:
        rows = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        parts.append(section("Evaluation (the stage's own held-out metrics; the eval suite: `make eval`)",
                             "| metric | value |\n|---|---:|\n" + "\n".join(f"| {k} | {v:.4g} |" for k, v in rows)))
    parts.append(section("Provenance (provenance.json)", "```json\n" + json.dumps(record, indent=2) + "\n```"))
    return "\n".join(parts)


def write(directory: str | Path, stage: str, record: dict, metrics: dict | None = None) -> None:
    (Path(directory) / "README.md").write_text(card(stage, record, metrics), encoding="utf-8")
