"""Stages `report` and `quantization`: one table (markdown + JSON) and a bar plot each.

    python -m eval.report --metrics FILE... --table FILE --json FILE --plot FILE [--changes]

One row per metrics file (named by its stem), in the order given: `report` is base -> SFT -> the alignment stage
named by `pipeline.align` -> that model as a q4_k_m GGUF; `quantization` (`--changes`) is that model against every
quantized variant, with the changes each costs against the first row.

(`dvc metrics show` lists every evaluated model.)
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from medforge import params
from medforge.io import atomic_path, write_json
from medforge.paths import stage_paths

COLUMNS = [("mcq_acc", "MCQ acc"), ("mcq_acc_norm", "MCQ acc (len-norm)"), ("preference_acc", "pref acc"),
           ("answer_ppl", "answer ppl"), ("tool_call_acc", "tool calls")]
COSTS = [("size_mb", "size MB", "{:.1f}"), ("memory_mb", "memory MB", "{:.1f}"), ("load_seconds", "load s", "{:.2f}"),
         ("generation_tokens_per_s", "gen tokens/s", "{:.0f}")]
CHANGES = [("ppl_change_pct", "ppl change %", "{:+.2f}"), ("mcq_change_pts", "MCQ change pts", "{:+.1f}")]


@dataclass
class Pipeline:
    align: str  # the alignment stage `make all` runs after SFT: ppo, grpo or a preference method

    def validate(self, path) -> None:
        stages = ["ppo", "grpo", *params.preference_methods(path)]
        if self.align not in stages:
            raise params.ParamsError(f"pipeline.align: expected one of {stages}, got {self.align!r}")


def collect(files: list[Path]) -> dict[str, dict]:
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise SystemExit(f"no metrics in {', '.join(missing)}: run their eval stages first (make eval)")
    return {f.stem: json.loads(f.read_text()) for f in files}


def with_changes(rows: dict[str, dict], reference: str) -> dict[str, dict]:
    """Each row plus its answer-perplexity change (%) and MCQ accuracy change (points) against `reference`."""
    ref = rows[reference]
    return {name: {**m, "ppl_change_pct": 100 * (m["answer_ppl"] / ref["answer_ppl"] - 1),
                   "mcq_change_pts": 100 * (m["mcq_acc"] - ref["mcq_acc"])} for name, m in rows.items()}


def cell(m: dict, key: str, form: str) -> str:
    """One table cell: the value, with its standard error where the metrics have one; "-" where it is missing."""
    if key not in m:
        return "-"
    stderr = m.get(f"{key}_stderr")
    return form.format(m[key]) + (f" ± {stderr:.3f}" if stderr is not None else "")


def markdown(rows: dict[str, dict]) -> str:
    columns = [(k, t, "{:.3f}") for k, t in COLUMNS] + COSTS + [c for c in CHANGES if c[0] in next(iter(rows.values()))]
    lines = ["| model | " + " | ".join(title for _, title, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for name, m in rows.items():
        cells = [cell(m, k, form) for k, _, form in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: dict[str, dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(4 * len(COLUMNS), 3.5))
    for ax, (key, title) in zip(axes, COLUMNS):
        names = [n for n, m in rows.items() if key in m]
        ax.bar(names, [rows[n][key] for n in names], yerr=[rows[n].get(f"{key}_stderr", 0) for n in names],
               color="tab:blue", capsize=3)
        ax.set_title(title)
        if key != "answer_ppl":
            ax.set_ylim(0, 1)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", action="store_true", help="each row's changes against the first")
    args = stage_paths("metrics*", "table", "json", "plot", parser=parser)
    rows = collect(args.metrics)
    if args.changes:
        rows = with_changes(rows, args.metrics[0].stem)
    table = markdown(rows)
    with atomic_path(args.table) as tmp:
        tmp.write_text(table, encoding="utf-8")
    write_json(args.json, rows)
    plot(rows, args.plot)
    print(table)


if __name__ == "__main__":
    main()
