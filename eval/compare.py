"""`make compare`: the runs side by side, from `dvc exp show --json`: the workspace, the commit and each experiment.

Each row shows only the params that differ between the runs, then the headline metrics: MCQ accuracy, preference
accuracy and answer perplexity of each evaluated model, and each training stage's seconds; metric columns equal in
every run are left out. Writes the table (markdown) and a plot of the metrics.

    python -m eval.compare --table FILE --plot FILE [--show FILE]   (--show: saved `dvc exp show --json` output;
                                                                      default: run it)
"""
from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from medforge.io import atomic_path
from eval.report import COLUMNS

HEADLINE = {key: title for key, title in COLUMNS if key in ("mcq_acc", "preference_acc", "answer_ppl")}


def flat(tree: dict, prefix: str = "") -> dict:
    """{"dpo": {"beta": 0.1}} -> {"dpo.beta": 0.1}; lists stay values."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def headline(metrics: dict) -> dict:
    """The headline numbers of one run's metric files: per evaluated model and per training stage."""
    quality, seconds = {}, {}
    for path, content in metrics.items():
        values = (content or {}).get("data") or {}
        name = Path(path).stem
        if Path(path).parent.name == "eval":
            quality.update({f"{name} {title}": values[key] for key, title in HEADLINE.items() if key in values})
        elif "seconds" in values and "train_loss" in values:  # a training stage's
            seconds[f"{name} s"] = round(values["seconds"])
    return {**quality, **seconds}


def runs(show: list[dict]) -> list[tuple[str, dict, dict]]:
    """(name, flat params, headline metrics) of each run that has metrics: the workspace, each commit, and each
    commit's experiments."""
    found = []

    def add(name: str, data: dict | None) -> None:
        data = data or {}
        metrics = headline(data.get("metrics") or {})
        if not metrics:
            print(f"compare: {name} has no metrics stored (for a commit: commit the dvc.lock `make all` wrote)")
        else:
            params = {key if path == "params.yaml" else f"{path}:{key}": value
                      for path, content in (data.get("params") or {}).items()
                      for key, value in flat((content or {}).get("data") or {}).items()}
            found.append((name, params, metrics))

    for row in show:
        add(row.get("name") or row["rev"][:7] if row["rev"] != "workspace" else "workspace", row.get("data"))
        for experiment in row.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                add(rev.get("name") or rev["rev"][:7], rev.get("data"))
    workspace = next((run for run in found if run[0] == "workspace"), None)
    same = workspace and next((run for run in found if run is not workspace and run[1:] == workspace[1:]), None)
    if same:  # the workspace holds the last experiment's results: one row, named for both
        found = [(f"{run[0]} (workspace)", *run[1:]) if run is same else run for run in found if run is not workspace]
    return found


def differing(rows: list[dict]) -> list[str]:
    """The keys whose values are not the same in every row (a key missing from a row counts as a difference), in
    the order they first appear."""
    keys = list(dict.fromkeys(key for row in rows for key in row))
    return [key for key in keys if len({json.dumps(row.get(key), sort_keys=True) for row in rows}) > 1]


def markdown(found: list[tuple[str, dict, dict]]) -> str:
    params = differing([p for _, p, _ in found])
    metrics = differing([m for _, _, m in found]) if len(found) > 1 else list(found[0][2])
    header = ["run", *params, *metrics]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for name, p, m in found:
        cells = [json.dumps(p.get(key)) if not isinstance(p.get(key), str) else p[key] for key in params]
        cells += [f"{m[key]:.3f}" if isinstance(m.get(key), float) else str(m.get(key, "-")) for key in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    note = "" if params else "\n(no params differ between these runs)\n"
    return "\n".join(lines) + "\n" + note


def plot(found: list[tuple[str, dict, dict]], path: Path) -> None:
    """One panel per headline metric, a bar per run and model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [name for name, _, _ in found]
    fig, axes = plt.subplots(1, len(HEADLINE), figsize=(5 * len(HEADLINE), 3.8))
    for ax, title in zip(axes, HEADLINE.values()):
        models = list(dict.fromkeys(key.removesuffix(" " + title) for _, _, m in found for key in m
                                    if key.endswith(" " + title)))
        width = 0.8 / max(len(names), 1)
        for i, (name, _, m) in enumerate(found):
            ax.bar([j + i * width for j in range(len(models))], [m.get(f"{model} {title}", 0) for model in models],
                   width, label=name)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(models))], models, rotation=20)
        ax.set_title(title)
        if title == HEADLINE["answer_ppl"]:
            ax.set_yscale("log")  # an untrained base model's perplexity is in the thousands
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, required=True, help="the markdown table")
    parser.add_argument("--plot", type=Path, required=True, help="the PNG plot")
    parser.add_argument("--show", type=Path, help="saved `dvc exp show --json` output instead of running it")
    args = parser.parse_args()
    text = args.show.read_text() if args.show else subprocess.run(
        ["dvc", "exp", "show", "--json"], check=True, capture_output=True, text=True).stdout
    found = runs(json.loads(text))
    if not found:
        raise SystemExit("compare: no run has metrics yet: `make all`, then another with "
                         '`make exp SET="preference.dpo.beta=0.2"`')
    table = markdown(found)
    with atomic_path(args.table) as tmp:
        tmp.write_text(table, encoding="utf-8")
    plot(found, args.plot)
    print(table + f"\n(table: {args.table}, plot: {args.plot})")


if __name__ == "__main__":
    main()
