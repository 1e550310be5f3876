"""Stage `prepare`: import local files or `hf:` datasets into canonical JSONL, dedupe, split.

Sources are listed per kind in params.yaml (`data.pretrain`, `data.sft`, `data.preference`):
  path/to/file.jsonl | .json | .txt (one document per line) | hf:org/name[:config]:split (or hf:org/name = train)
A bad record stops the stage naming file, line and field; with `on_error: skip` it goes to
rejects.jsonl beside the prepared files and is counted in the stage's metrics instead.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medforge import params, provenance
from medforge.formats import IMPORTERS, FormatError
from medforge.io import atomic_path, write_jsonl
from medforge.paths import stage_paths


@dataclass
class Params:
    pretrain: list[str]
    sft: list[str]
    preference: list[str]
    on_error: Literal["fail", "skip"]
    validation_fraction: float
    seed: int
    hf_revision: str | None


def read_source(source: str, revision: str | None) -> Iterator[tuple[str, int, dict | str]]:
    """Yield (where, line_number, raw record or JSON text) from a local file or a Hugging Face dataset."""
    if source.startswith("hf:"):
        import datasets
        name, *rest = source[3:].split(":")
        if len(rest) > 2:
            raise SystemExit(f"{source}: expected hf:org/name[:config]:split")
        config, split = (rest[0], rest[1]) if len(rest) == 2 else (None, rest[0] if rest else "train")
        for i, row in enumerate(datasets.load_dataset(name, config, split=split, revision=revision), 1):
            yield source, i, dict(row)
        return
    path = Path(source)
    if not path.exists():
        raise SystemExit(f"{source}: no such file (listed in params.yaml data section)")
    if path.suffix == ".txt":
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield source, n, {"text": line.strip()}
    elif path.suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise SystemExit(f"{source}: expected a JSON list of records")
        for i, row in enumerate(rows, 1):
            yield source, i, row
    else:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield source, n, line


def parse_object(raw: dict | str) -> dict:
    """A JSONL line (or an already-parsed row) as a dict; bad JSON is a bad record like any other."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise FormatError("(line)", f"valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(raw, dict):
        raise FormatError("(line)", f"a JSON object, got {type(raw).__name__}")
    return raw


def in_validation(record: dict, p: Params) -> bool:
    """Split by a hash of the record: stable across runs and when sources are added."""
    key = f"{p.seed}:{json.dumps(record, ensure_ascii=False, sort_keys=True)}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64 < p.validation_fraction


def main(argv: list[str] | None = None) -> None:
    paths = stage_paths("out", "metrics", argv=argv)
    p = params.load("data")
    rejects, metrics = [], {}
    with atomic_path(paths.out, directory=True) as tmp:
        for kind, importer in IMPORTERS.items():
            seen, splits, counts = set(), {"train": [], "validation": []}, {"read": 0, "rejected": 0,
                                                                             "duplicates": 0}
            for source in getattr(p, kind):
                for where, line, raw in read_source(source, p.hf_revision):
                    counts["read"] += 1
                    try:
                        record = importer(parse_object(raw))
                    except FormatError as e:
                        if p.on_error == "fail":
                            raise SystemExit(f"{where}:{line}: {e} ({kind} record; set data.on_error: skip "
                                             f"to reject and count such records instead)") from None
                        counts["rejected"] += 1
                        rejects.append({"source": where, "line": line, "kind": kind, "error": str(e)})
                        continue
                    key = json.dumps(record, ensure_ascii=False, sort_keys=True)
                    if key in seen:
                        counts["duplicates"] += 1
                        continue
                    seen.add(key)
                    splits["validation" if in_validation(record, p) else "train"].append(record)
            for split, records in splits.items():
                counts[split] = write_jsonl(tmp / f"{kind}_{split}.jsonl", records)
            metrics[kind] = counts
        write_jsonl(tmp / "rejects.jsonl", rejects)
    provenance.write_metrics(paths.metrics, metrics)
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
