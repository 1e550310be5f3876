"""dvc.yaml's code dependencies are the import graph's (tools/deps.py), so DVC reruns exactly what an edit touches."""
import json
import shutil

from tests.pipeline import DVC, sh
from tools import deps


def test_every_stage_depends_on_all_the_code_it_runs():
    assert deps.problems(deps.DVC_YAML.read_text()) == [], "dvc.yaml's code deps are stale: run `make deps`"


def test_a_dependency_dropped_from_dvc_yaml_is_caught():
    text = deps.DVC_YAML.read_text()
    dropped = text.replace("stages/sft.py, medforge/launch.py, medforge/__init__.py, medforge/attention.py, ",
                           "stages/sft.py, medforge/launch.py, medforge/__init__.py, ")
    assert dropped != text
    assert deps.problems(dropped) == ["dvc.yaml: stage sft: missing dependency medforge/attention.py"]
    assert deps.problems(deps.rewrite(dropped)) == []


def test_editing_a_module_changes_exactly_the_stages_that_run_it(repo, tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy, symlinks=True)
    assert json.loads(sh(str(DVC), "status", "--json", cwd=copy)) == {}
    names = sh(str(DVC), "stage", "list", "--name-only", cwd=copy).split()
    defined = deps.stages((copy / "dvc.yaml").read_text())
    files = sorted({str(p.relative_to(deps.ROOT)) for p in deps.modules().values()} |
                   {f for stage in defined.values() for f in deps.code_deps(stage)})
    assert len(files) > 20 and "medforge/attention.py" in files and "medforge/knowledge.jsonl" in files
    for name in files:
        path = copy / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        try:
            changed = set(json.loads(sh(str(DVC), "status", "--json", cwd=copy)))
        finally:
            path.write_bytes(original)
        expected = {n for n in names if name in deps.code_deps(defined[n.split("@")[0]])}
        assert changed == expected, name
