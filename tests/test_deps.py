"""dvc.yaml's code dependencies are the import graph's (tools/deps.py), so DVC reruns exactly what an edit touches."""
import ast
import json
import shlex
import shutil

import yaml

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
    code = {n: [f.replace("${key}", n.partition("@")[2]) for f in deps.code_deps(defined[n.partition("@")[0]])]
            for n in names}  # a foreach group's stage: its own module for `stages/${key}.py`
    files = sorted({str(p.relative_to(deps.ROOT)) for p in deps.modules().values()} |
                   {f for stage in code.values() for f in stage})
    assert len(files) > 20 and "medforge/attention.py" in files and "medforge/knowledge.jsonl" in files
    for name in files:
        path = copy / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n# edited\n")
        try:
            changed = set(json.loads(sh(str(DVC), "status", "--json", cwd=copy)))
        finally:
            path.write_bytes(original)
        expected = {n for n in names if name in code[n]}
        assert changed == expected, name


# what a stage reads besides what its command names: the folder params.yaml `data` sources of your own live in
USER_DATA = {"prepare": {"data/raw"}}


def leaves(value) -> list[str]:
    """Every value in nested params, as strings."""
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in leaves(v)]
    return [leaf for v in value for leaf in leaves(v)] if isinstance(value, list) else [str(value)]


def resolved_stages() -> dict[str, tuple[list[str], set[str], set[str]]]:
    """Each stage as DVC resolves dvc.yaml: its command's tokens, non-code deps and outputs."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo
    with Repo(str(deps.ROOT)) as repo:
        found = {}
        for stage in repo.index.stages:
            files = {d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)}
            found[stage.addressing] = (shlex.split(stage.cmd), {f for f in files if not deps.is_code(f)},
                                       {o.def_path for o in stage.outs})
        return found


def under(path: str, folders) -> bool:
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def test_every_file_a_stage_reads_or_writes_is_on_its_command_line_or_in_params():
    stages = resolved_stages()
    chosen = leaves(yaml.safe_load((deps.ROOT / "params.yaml").read_text()))  # paths a user picks: init, heldout...
    assert len(stages) > 25
    for name, (cmd, inputs, outputs) in stages.items():
        named = [t for t in cmd if "/" in t]
        for path in outputs:
            assert under(path, named), f"{name}: output {path} is not on its command line: {' '.join(cmd)}"
        for path in inputs - USER_DATA.get(name, set()):
            assert path in named or any(under(v, [path]) for v in chosen), \
                f"{name}: reads {path}, which neither its command line nor params.yaml names"
        for token in named:
            assert under(token, inputs | outputs) or any(under(o, [token]) for o in outputs), \
                f"{name}: {token} on its command line is no dep or output"  # (or a folder holding outputs)


def pipeline_paths(path, roots: set[str]) -> list[tuple[int, str]]:
    """The string constants of a module (docstrings left out) that name a path under one of `roots`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and "/" in node.value and node.value.split("/")[0] in roots]


def test_no_stage_code_holds_a_pipeline_path():
    roots = {p.split("/")[0] for _, inputs, outputs in resolved_stages().values() for p in inputs | outputs}
    assert {"data", "models", "metrics", "dvclive", "reports"} <= roots
    found = [f"{path.relative_to(deps.ROOT)}:{line}: {value!r}" for path in deps.modules().values()
             for line, value in pipeline_paths(path, roots)]
    assert found == [], "paths belong on the stage's dvc.yaml command line (medforge.paths):\n" + "\n".join(found)


def test_a_path_written_in_code_is_caught(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""Writes models/x."""\nOUT = "models/sft"\nLOG = f"metrics/{OUT}.json"\nNAME = "models"\n')
    assert pipeline_paths(module, {"models", "metrics"}) == [(2, "models/sft"), (3, "metrics/")]
