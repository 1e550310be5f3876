"""dvc.yaml's code dependencies, derived from the import graph: `make deps` rewrites them, a test checks them.

A stage depends on every project module its command runs (`python -m MODULE`, and the module medforge.launch runs),
every project module those import at any depth (imports inside functions included), the __init__.py of their
packages, the files a module reads from its own folder (a string literal naming one, as
`Path(__file__).with_name("knowledge.jsonl")` does), and the module of each params.yaml section it loads
(`params.load("sft")` imports its schema's module: medforge.params.schema_path). Other deps (data, models) stay as
written.

    python tools/deps.py           # rewrite dvc.yaml's code deps
    python tools/deps.py --check   # list what is missing or extra; exit 1 if anything is
"""
from __future__ import annotations

import ast
import re
import sys
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project is not installed; tools run from the checkout
from medforge.params import ParamsError, load_raw, schema_path  # noqa: E402

PACKAGES = ("medforge", "stages", "eval", "serve")  # the code stages run; bench/tools/tests are not stage code
DVC_YAML = ROOT / "dvc.yaml"


@cache
def modules() -> dict[str, Path]:
    """Every project module by dotted name (a package by its __init__.py)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def with_parents(name: str) -> list[str]:
    """`a.b.c` and the packages Python imports first: a, a.b (those that are project modules)."""
    parts = name.split(".")
    return [m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in modules()]


def schema(section) -> str | None:
    """The module of params.yaml section `section`'s schema (None: not a section)."""
    try:
        return schema_path(section, ROOT / "params.yaml").split(":")[0]
    except (ParamsError, TypeError):
        return None


@cache
def direct(name: str) -> frozenset[str]:
    """The project modules `name` imports anywhere in its source, and the files it reads from its folder."""
    path = modules()[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = set(with_parents(name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(with_parents(alias.name))
        elif isinstance(node, ast.ImportFrom):
            package = node.module or ""
            if node.level:  # relative: from the importing module's package, node.level - 1 packages up
                parts = name.split(".")[:None if path.name == "__init__.py" else -1]
                package = ".".join(parts[:len(parts) - node.level + 1] + ([package] if package else []))
            found.update(with_parents(package))
            for alias in node.names:
                found.update(with_parents(f"{package}.{alias.name}"))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "load" \
                and node.args and isinstance(node.args[0], ast.Constant) and schema(node.args[0].value):
            found.update(with_parents(schema(node.args[0].value)))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"[\w.-]+", node.value):
            beside = path.parent / node.value
            if beside.is_file():
                found.add(str(beside.relative_to(ROOT)))
    found.discard(name)
    return frozenset(found)


def closure(entry: list[str]) -> list[str]:
    """Repository-relative paths of everything the entry modules run and read, sorted."""
    seen, todo = set(), list(entry)
    while todo:
        name = todo.pop()
        if name in seen or name not in modules():
            continue
        seen.add(name)
        todo += direct(name)
    files = {str(modules()[m].relative_to(ROOT)) if m in modules() else m for m in seen}
    files |= {f for m in seen if m in modules() for f in direct(m) if f not in modules()}
    return sorted(files)


def entry_modules(cmd: str) -> list[str]:
    """The modules a stage command runs: `python -m X` (and the module `medforge.launch` is given); `${key}` stays."""
    found = re.findall(r"python -m ([\w.${}]+)(?: ([\w.${}]+))?", cmd)
    return [m for module, arg in found for m in (module, *([arg] if module == "medforge.launch" else []))
            if "${key}" in m or m in modules()]


def foreach_keys(stage: dict) -> list[str]:
    """The keys of a foreach stage's items: a dict written out, or a params.yaml dict (`foreach: ${preference}`)."""
    items = stage["foreach"]
    if isinstance(items, str):
        items = load_raw(ROOT / "params.yaml")
        for part in stage["foreach"].strip("${}").split("."):
            items = items[part]
    return list(items)


def stages(dvc_yaml: str) -> dict[str, dict]:
    return yaml.safe_load(dvc_yaml)["stages"]


def is_code(dep: str) -> bool:
    return dep.split("/")[0] in PACKAGES


def code_deps(stage: dict) -> list[str]:
    """The stage's own modules first, then the rest of what they run, sorted. A command running `stages.${key}`
    depends on `stages/${key}.py` and on what each key's module runs."""
    entry = entry_modules(stage.get("do", stage)["cmd"])
    keys = foreach_keys(stage) if any("${key}" in m for m in entry) else [""]
    own = [m.replace(".", "/") + ".py" if "${key}" in m else str(modules()[m].relative_to(ROOT)) for m in entry]
    ran = {f for key in keys for f in closure([m.replace("${key}", key) for m in entry])}
    ran -= {path.replace("${key}", key) for path in own for key in keys}
    return [*own[::-1], *sorted(ran)]


def problems(dvc_yaml: str) -> list[str]:
    """One line per stage whose code deps are not exactly what its command runs and reads."""
    out = []
    for name, stage in stages(dvc_yaml).items():
        declared = {d for d in stage.get("do", stage).get("deps", []) if is_code(d)}
        wanted = set(code_deps(stage))
        for dep in sorted(wanted - declared):
            out.append(f"dvc.yaml: stage {name}: missing dependency {dep}")
        for dep in sorted(declared - wanted):
            out.append(f"dvc.yaml: stage {name}: {dep} is not code the stage runs")
    return out


def flow_list(items: list[str], indent: int, width: int = 120) -> str:
    """`[a, b, ...]` opening at column `indent`, wrapped to `width`, continuation lines aligned after the bracket."""
    lines = [""]
    for i, item in enumerate(items):
        piece = (item if re.fullmatch(r"[\w./@-]+", item) else f'"{item}"') + ("]" if i == len(items) - 1 else ",")
        if lines[-1] and indent + 1 + len(lines[-1]) + 1 + len(piece) > width:
            lines.append("")
        lines[-1] += (" " if lines[-1] else "") + piece
    return "[" + ("\n" + " " * (indent + 1)).join(lines)


def rewrite(dvc_yaml: str) -> str:
    """dvc.yaml with each stage's code deps replaced by the derived ones, first, then its other deps as they were."""
    defined = stages(dvc_yaml)
    out, stage, lines, i = [], None, dvc_yaml.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        if m := re.fullmatch(r"  ([\w-]+):.*", line):
            stage = m.group(1)
        if stage and (m := re.fullmatch(r"(\s+deps: )\[(.*)", line)):
            block = line
            while not block.rstrip().endswith("]"):
                i += 1
                block += "\n" + lines[i]
            old = yaml.safe_load(block.split(":", 1)[1])
            new = code_deps(defined[stage]) + [d for d in old if not is_code(d)]
            out.append(m.group(1) + flow_list(new, len(m.group(1))))
        else:
            out.append(line)
        i += 1
    return "\n".join(out)


def main() -> None:
    text = DVC_YAML.read_text(encoding="utf-8")
    if sys.argv[1:] == ["--check"]:
        found = problems(text)
        print("\n".join(found) or "dvc.yaml: every stage's code deps are complete")
        raise SystemExit(1 if found else 0)
    new = rewrite(text)
    assert not problems(new), problems(new)
    DVC_YAML.write_text(new, encoding="utf-8")
    print("dvc.yaml: code deps " + ("rewritten" if new != text else "already complete"))


if __name__ == "__main__":
    main()
