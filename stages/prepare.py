"""Stage `prepare`: import local files or `hf:` datasets into canonical JSONL, dedupe, split.

Sources are listed per kind in params.yaml (`data.pretrain`, `data.sft`, `data.preference`, `data.questions`):
  path/to/file.jsonl | .json | .txt (one document per line) | hf:org/name[:config]:split (or hf:org/name = train)
A bad record stops the stage naming file, line and field; with `on_error: skip` it goes to
rejects.jsonl beside the prepared files and is counted in the stage's metrics instead. Every record is scanned for
personal data (medforge/phi.py): `phi` reports what it finds per source and kind in the metrics, masks it, or
rejects the record (counted; rejects.jsonl names the source, line and kinds, never the data).
Sources stream: `num_proc` worker processes import, scan and hash chunks of records, this process dedupes and writes
them in order, so memory holds a few chunks and a 16-byte digest per distinct record, whatever the corpus's size.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Literal

import numpy as np

from medforge import params, phi, provenance
from medforge.formats import IMPORTERS, FormatError
from medforge.io import atomic_path
from medforge.paths import stage_paths


@dataclass
class Params:
    pretrain: list[str]
    sft: list[str]
    preference: list[str]
    questions: list[str]
    on_error: Literal["fail", "skip"]
    phi: Literal["report", "mask", "reject"]
    validation_fraction: float
    seed: int
    hf_revision: str | None
    num_proc: int  # processes that import records (0: one per core)


CHUNK = 1000  # records a worker imports at a time


def read_lines(path: Path) -> Iterator[tuple[int, str | FormatError]]:
    """(line number, text) of each non-blank line, a UTF-8 BOM dropped; a line that is not UTF-8 comes as the
    FormatError it is, a bad record like any other."""
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            try:
                text = line.decode("utf-8").removeprefix("\ufeff")
            except UnicodeDecodeError as e:
                yield n, FormatError("(line)", f"valid UTF-8 (byte 0x{line[e.start]:02x} at column {e.start + 1})")
                continue
            if text.strip():
                yield n, text


def read_source(source: str, revision: str | None) -> Iterator[tuple[int, dict | str | FormatError]]:
    """Yield (line number, raw record, JSON text or the FormatError of an unreadable line) from a local file or a
    Hugging Face dataset, one at a time: nothing but a `.json` list is held whole."""
    if source.startswith("hf:"):
        import datasets
        name, *rest = source[3:].split(":")
        if len(rest) > 2:
            raise SystemExit(f"{source}: expected hf:org/name[:config]:split")
        config, split = (rest[0], rest[1]) if len(rest) == 2 else (None, rest[0] if rest else "train")
        rows = datasets.load_dataset(name, config, split=split, revision=revision, streaming=True)  # nothing cached
        for i, row in enumerate(rows, 1):
            yield i, dict(row)
        return
    path = Path(source)
    if not path.exists():
        raise SystemExit(f"{source}: no such file (listed in params.yaml data section)")
    if path.suffix == ".txt":
        for n, text in read_lines(path):
            yield n, text if isinstance(text, FormatError) else {"text": text.strip()}
    elif path.suffix == ".json":
        data = path.read_bytes()
        try:
            rows = json.loads(data.decode("utf-8").removeprefix("\ufeff"))
        except UnicodeDecodeError as e:
            line = data.count(b"\n", 0, e.start) + 1
            raise SystemExit(f"{source}:{line}: not valid UTF-8 (byte 0x{data[e.start]:02x})") from None
        except json.JSONDecodeError as e:
            raise SystemExit(f"{source}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(rows, list):
            raise SystemExit(f"{source}: expected a JSON list of records")
        yield from enumerate(rows, 1)
    else:
        yield from read_lines(path)


def parse_object(raw: dict | str | FormatError) -> dict:
    """A JSONL line (or an already-parsed row) as a dict; bad JSON is a bad record like any other."""
    if isinstance(raw, FormatError):
        raise raw
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise FormatError("(line)", f"valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(raw, dict):
        raise FormatError("(line)", f"a JSON object, got {type(raw).__name__}")
    return raw


def in_validation(key: str, p: Params) -> bool:
    """Split by a hash of the record (`key`: its canonical JSON): stable across runs and when sources are added."""
    digest = hashlib.sha256(f"{p.seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < p.validation_fraction


@dataclass
class Imported:
    """One read record after import, PHI scan and hashing (in a worker process): its output line, the digest of its
    canonical JSON, its split and its personal-data findings; or why it was refused."""
    line: int
    error: str | None
    text: str
    digest: bytes
    validation: bool
    found: Counter | None


def batched(items: Iterable, n: int) -> Iterator[list]:  # itertools.batched from Python 3.12
    items = iter(items)
    while chunk := list(itertools.islice(items, n)):
        yield chunk


def import_chunk(kind: str, p: Params, chunk: list[tuple[int, dict | str | FormatError]]) -> list[Imported]:
    importer, done = IMPORTERS[kind], []
    for line, raw in chunk:
        try:
            record = importer(parse_object(raw))
        except FormatError as e:
            done.append(Imported(line, str(e), "", b"", False, None))
            continue
        record, found = phi.scan(record, masking=p.phi == "mask")
        key = json.dumps(record, ensure_ascii=False, sort_keys=True)
        done.append(Imported(line, None, text=json.dumps(record, ensure_ascii=False) + "\n",
                             digest=hashlib.blake2b(key.encode(), digest_size=16).digest(),
                             validation=in_validation(key, p), found=found or None))
    return done


def workers(p: Params) -> int:
    return p.num_proc or os.cpu_count()


def imported(kind: str, p: Params, source: str, pool) -> Iterator[list[Imported]]:
    """`source`'s records imported chunk by chunk by `pool`'s processes (here without one), in order; a few chunks
    ahead at most, so memory does not grow with the source."""
    chunks = batched(read_source(source, p.hf_revision), CHUNK)
    if pool is None:
        yield from (import_chunk(kind, p, chunk) for chunk in chunks)
        return
    pending = deque()
    for chunk in chunks:
        pending.append(pool.submit(import_chunk, kind, p, chunk))
        if len(pending) > 2 * workers(p):
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class Digests:
    """The digests seen so far, 16 bytes each: the latest in a set, the rest in a sorted array, merged in as the
    set grows (a Python set would take about 95 bytes a digest: 1.2 GB for a 10 GB text corpus)."""

    def __init__(self, merge_at: int = 1 << 18):
        self.recent, self.merged, self.merge_at = set(), np.empty(0, dtype="V16"), merge_at

    def new(self, batch: list[bytes]) -> list[bool]:
        """For each digest in `batch`, in order, whether it is seen here for the first time (and add it)."""
        old = np.zeros(len(batch), dtype=bool)
        if len(self.merged) and batch:
            query = np.frombuffer(b"".join(batch), dtype="V16")
            at = np.minimum(np.searchsorted(self.merged, query), len(self.merged) - 1)
            old = self.merged[at] == query
        fresh = []
        for digest, seen in zip(batch, old.tolist(), strict=True):
            fresh.append(not seen and digest not in self.recent)
            if fresh[-1]:
                self.recent.add(digest)
        if len(self.recent) >= self.merge_at:
            add = np.sort(np.frombuffer(b"".join(self.recent), dtype="V16"))
            self.merged = np.insert(self.merged, np.searchsorted(self.merged, add), add)
            self.recent = set()
        return fresh


def reject(rejects, source: str, line: int, kind: str, error: str) -> None:
    rejects.write(json.dumps({"source": source, "line": line, "kind": kind, "error": error}, ensure_ascii=False) + "\n")


def prepare_kind(kind: str, p: Params, out: Path, rejects, personal: dict[str, Counter], pool) -> dict:
    """Import, dedupe and split one kind's sources into OUT/<kind>_{train,validation}.jsonl as they are read;
    personal data found is added to `personal` (source -> kind -> count). Memory holds a digest per distinct record
    (of its canonical JSON), not the records."""
    counts = {"read": 0, "rejected": 0, "duplicates": 0, "train": 0, "validation": 0}
    digests = Digests()
    with open(out / f"{kind}_train.jsonl", "w", encoding="utf-8") as train, \
            open(out / f"{kind}_validation.jsonl", "w", encoding="utf-8") as validation:
        for source in getattr(p, kind):
            read_before = counts["read"]
            for chunk in imported(kind, p, source, pool):
                counts["read"] += len(chunk)
                kept = []
                for record in chunk:
                    if record.error:
                        if p.on_error == "fail":
                            raise SystemExit(f"{source}:{record.line}: {record.error} ({kind} record; set "
                                             f"data.on_error: skip to reject and count such records instead)")
                        counts["rejected"] += 1
                        reject(rejects, source, record.line, kind, record.error)
                    elif record.found and p.phi == "reject":
                        reject(rejects, source, record.line, kind,
                               f"personal data: {', '.join(sorted(record.found))} (data.phi)")
                    else:
                        kept.append(record)
                    if record.found:
                        personal.setdefault(source, Counter()).update(record.found)
                        personal[source]["records"] += 1
                for record, new in zip(kept, digests.new([record.digest for record in kept]), strict=True):
                    if not new:
                        counts["duplicates"] += 1
                        continue
                    (validation if record.validation else train).write(record.text)
                    counts["validation" if record.validation else "train"] += 1
            if counts["read"] == read_before:
                raise SystemExit(f"{source}: no records in it (data.{kind}); fix the file or remove it from "
                                 f"params.yaml")
    return counts


def main(argv: list[str] | None = None) -> None:
    paths = stage_paths("out", "metrics", argv=argv)
    p = params.load("data")
    personal = {}
    with atomic_path(paths.out, directory=True) as tmp, open(tmp / "rejects.jsonl", "w", encoding="utf-8") as rejects, \
            (ProcessPoolExecutor(workers(p), get_context("spawn")) if workers(p) > 1 else nullcontext()) as pool:
        metrics = {kind: prepare_kind(kind, p, tmp, rejects, personal, pool) for kind in IMPORTERS}
    metrics["phi"] = {"action": p.phi, "findings": {source: dict(found) for source, found in personal.items()}}
    provenance.write_metrics(paths.metrics, metrics)
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
