"""A preference method is one stage file and one params.yaml section: dvc.yaml's stages, the make target, the schema,
`pipeline.align`'s choices, `make plan` and the tests' lists all derive from params.yaml's `preference`."""
import json
import sys

from medforge import params
from tests.pipeline import PREFERENCE, ROOT, checkout, sh

# run in the copy, where the new stage module is (its schema is that module's Params)
CHECKS = """
import json
from medforge import params, plan
rows = plan.plan("params.yaml", 80 * plan.GiB, 989, "single", 1)
shape = plan.model_shape(params.load("model"))
print(json.dumps({
    "same_params": params.load("orpo2") == params.load("orpo"), "align": params.load("pipeline").align,
    "planned": [stage for stage, *_ in rows],
    "memory": [rows[-1][2].total, plan.estimate("orpo", params.load("orpo"), shape, 8, "single", 1, 989).total]}))
"""


def add_method(repo, name: str, like: str) -> None:
    """Method `name`: `like`'s stage file and params section under another name, and nothing else."""
    source = (ROOT / f"stages/{like}.py").read_text()
    (repo / f"stages/{name}.py").write_text(source.replace(f'"{like}"', f'"{name}"'))
    text = (repo / "params.yaml").read_text()
    start = text.index(f"\n  {like}:\n") + 1
    end = text.index("\n\n", start) + 1
    (repo / "params.yaml").write_text(text[:end] + "\n" + text[start:end].replace(f"  {like}:", f"  {name}:", 1)
                                      + text[end:])


def test_a_new_method_is_a_stage_file_and_a_params_section(tmp_path, monkeypatch):
    repo = checkout(tmp_path)
    sh("git", "init", "-q", cwd=repo)
    add_method(repo, "orpo2", like="orpo")
    path = repo / "params.yaml"
    params.write_overridden(path, {"pipeline": {"align": "orpo2"}}, path)
    assert sorted(params.preference_methods(path)) == sorted([*PREFERENCE, "orpo2"])

    from dvc.repo import Repo
    monkeypatch.chdir(repo)  # DVC reads the params that dvc.yaml interpolates from the working directory
    with Repo(str(repo)) as dvc:
        stages = {s.addressing: s for s in dvc.index.stages}
    trained, merged, evaluated = (stages[f"{group}@orpo2"] for group in ("preference", "merge-preference",
                                                                           "eval-preference"))
    assert trained.cmd.startswith("python -m medforge.launch stages.orpo2 ")
    assert {"stages/orpo2.py", "models/sft", "data/prepared/preference_train.jsonl"} <= {
        d.def_path for d in trained.deps}
    assert [o.def_path for o in trained.outs] == ["models/orpo2", "metrics/orpo2.json",
                                                  "dvclive/orpo2/plots/metrics"]
    assert "models/orpo2" in {d.def_path for d in merged.deps}
    assert "models/merged/orpo2" in {d.def_path for d in evaluated.deps}
    assert "dvc repro eval-preference@orpo2" in sh("make", "-n", "orpo2", f"VENV={ROOT / '.venv'}", cwd=repo)

    out = sh(sys.executable, "-c", CHECKS, cwd=repo)
    checked = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    assert checked["same_params"] and checked["align"] == "orpo2"  # a valid pipeline.align
    assert checked["planned"][-1] == "orpo2"
    assert checked["memory"][0] == checked["memory"][1]  # planned like ORPO: chosen and rejected in one step
