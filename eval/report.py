"""Stage `report`: one table (markdown + JSON) and a bar plot of the pipeline's models: base -> SFT -> the
alignment stage named by params.yaml `pipeline.align` -> that model as a q4_k_m GGUF run by llama.cpp.
(`dvc metrics show` lists every evaluated model.)

    python -m eval.report            -> reports/eval.md, reports/eval.json, plots/eval.png; prints the table
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from medforge import params
from medforge.io import atomic_path, write_json

METRICS = Path("metrics/eval")
COLUMNS = [("mcq_acc", "MCQ acc"), ("mcq_acc_norm", "MCQ acc (len-norm)"), ("preference_acc", "pref acc"),
           ("answer_ppl", "answer ppl")]
COSTS = [("size_mb", "size MB", "{:.1f}"), ("load_seconds", "load s", "{:.2f}"),
         ("generation_tokens_per_s", "gen tokens/s", "{:.0f}")]


@dataclass
class Pipeline:
    align: Literal["dpo", "orpo", "kto", "ppo", "grpo"] = "dpo"  # the alignment stage `make all` runs after SFT


def collect(names: list[str]) -> dict[str, dict]:
    missing = [n for n in names if not (METRICS / f"{n}.json").exists()]
    if missing:
        raise SystemExit(f"no metrics for {missing} in {METRICS}/: run their eval stages first (make eval)")
    return {n: json.loads((METRICS / f"{n}.json").read_text()) for n in names}


def markdown(rows: dict[str, dict]) -> str:
    columns = [(k, t, "{:.3f}") for k, t in COLUMNS] + COSTS
    lines = ["| model | " + " | ".join(title for _, title, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for name, m in rows.items():
        cells = [form.format(m[k]) if k in m else "-" for k, _, form in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: dict[str, dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(COLUMNS), figsize=(4 * len(COLUMNS), 3.5))
    for ax, (key, title) in zip(axes, COLUMNS):
        names = [n for n, m in rows.items() if key in m]
        ax.bar(names, [rows[n][key] for n in names], color="tab:blue")
        ax.set_title(title)
        if key != "answer_ppl":
            ax.set_ylim(0, 1)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def main() -> None:
    rows = collect(["base", "sft", params.load("pipeline", Pipeline).align, "gguf-q4_k_m"])
    table = markdown(rows)
    Path("reports").mkdir(exist_ok=True)
    with atomic_path("reports/eval.md") as tmp:
        tmp.write_text(table, encoding="utf-8")
    write_json("reports/eval.json", rows)
    plot(rows, Path("plots/eval.png"))
    print(table)


if __name__ == "__main__":
    main()
