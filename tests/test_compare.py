"""`make compare` (eval/compare.py) on `dvc exp show --json` as DVC 3 writes it: a workspace, a commit without stored
metrics, and two experiments."""
import json

from eval import compare


def run(name, beta, mcq, seconds, commit_only=False):
    params = {"params.yaml": {"data": {"preference": {"dpo": {"beta": beta, "max_length": 256}},
                                       "data": {"sft": ["a.jsonl"]}}}}
    metrics = {"metrics/eval/dpo.json": {"data": {"mcq_acc": mcq, "preference_acc": 0.8, "answer_ppl": 3.0,
                                                  "mcq_acc_stderr": 0.03}},
               "metrics/eval/base.json": {"data": {"mcq_acc": 0.25, "preference_acc": 0.4, "answer_ppl": 2000.0}},
               "metrics/dpo.json": {"data": {"train_loss": 0.5, "seconds": seconds}},
               "metrics/data.json": {"data": {"sft": {"read": 10}}}}
    if commit_only:
        metrics = {path: {"error": {"type": "FileNotFoundError"}} for path in metrics}
    return {"rev": name, "name": None, "data": {"rev": name, "params": params, "metrics": metrics}}


def show():
    experiment = [{"revs": [{**run("e1" * 20, 0.2, 0.5, 40.0), "name": "beta-02"}], "name": "beta-02"},
                  {"revs": [{**run("e2" * 20, 0.05, 0.45, 35.4), "name": "beta-005"}], "name": "beta-005"}]
    return [run("workspace", 0.05, 0.45, 35.4), {**run("a" * 40, 0.05, 0, 0, commit_only=True), "name": "main",
                                                  "experiments": experiment}]


def test_only_what_differs_with_the_headline_metrics(capsys):
    found = compare.runs(show())
    # the workspace holds the last experiment's results: one row for both
    assert [name for name, _, _ in found] == ["beta-02", "beta-005 (workspace)"]
    assert "main has no metrics stored" in capsys.readouterr().out
    table = compare.markdown(found).splitlines()
    assert table[0] == "| run | preference.dpo.beta | dpo MCQ acc | dpo s |"  # equal params and metrics left out
    assert table[2:] == ["| beta-02 | 0.2 | 0.500 | 40 |", "| beta-005 (workspace) | 0.05 | 0.450 | 35 |"]
    edited = show()
    edited[0]["data"]["params"]["params.yaml"]["data"]["preference"]["dpo"]["beta"] = 0.1  # a workspace of its own
    assert [name for name, _, _ in compare.runs(edited)] == ["workspace", "beta-02", "beta-005"]


def test_writes_the_table_and_a_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "show.json").write_text(json.dumps(show()))
    monkeypatch.setattr("sys.argv", ["compare", "--show", "show.json", "--table", "reports/compare.md", "--plot",
                                     "plots/compare.png"])
    compare.main()
    assert (tmp_path / "reports/compare.md").read_text().startswith("| run | preference.dpo.beta |")
    assert (tmp_path / "plots/compare.png").read_bytes()[:4] == b"\x89PNG"
