"""Presets: ready configurations for real checkpoints (configs/presets/NAME.yaml), each the params.yaml values it
changes. Applying one writes them into params.yaml, comments and layout kept, so `make`, `dvc repro` and `dvc exp
run` all run it and `git diff params.yaml` shows what it chose; `git checkout params.yaml` goes back to the tiny
default. Every section is validated before params.yaml is replaced: a preset with a wrong key or type changes nothing.

    python -m medforge.presets                   # the presets, one line each
    python -m medforge.presets qwen2.5-7b-qlora  # apply one (`make preset PRESET=...`; `make all PRESET=...`)
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

from medforge import params
from medforge.io import atomic_path

PRESETS = Path(__file__).resolve().parents[1] / "configs" / "presets"


def names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def read(name: str) -> dict:
    path = PRESETS / f"{name}.yaml"
    if not path.exists():
        raise SystemExit(f"preset {name!r}: no {path} (presets: {', '.join(names())})")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def apply(name: str, override: dict | None = None, path: Path = params.PARAMS_FILE) -> list[str]:
    """Write preset `name` (then `override`, e.g. a test's checkpoint and sizes) into `path`; returns the changes."""
    preset = read(name)
    try:
        with atomic_path(path) as tmp:
            changed = params.write_overridden(tmp, preset, path)
            changed += params.write_overridden(tmp, override or {}, tmp)
            for section in params.sections(tmp):
                params.load(section, tmp)
    except params.ParamsError as e:
        raise SystemExit(f"preset {name}: {e}") from None
    return changed


def main() -> None:
    if len(sys.argv) < 2:
        for name in names():
            print(f"{name:22} {next(iter((PRESETS / f'{name}.yaml').read_text().splitlines()), '').lstrip('# ')}")
        return
    changed = apply(sys.argv[1])
    print(f"params.yaml: preset {sys.argv[1]}, {len(changed)} values changed")
    print("\n".join(f"  {line}" for line in changed))


if __name__ == "__main__":
    main()
