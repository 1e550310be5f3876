"""Sharing results the DVC way, with two clones and a local remote: `make all`, commit, `make push`; then
`git clone`, `make pull` restores every artifact, and nothing reruns."""
import hashlib
import shutil
import subprocess

import yaml

from tests.pipeline import DVC, ROOT, sh

OUTPUTS = ("data", "models", "metrics", "reports", "plots", "samples", "dvclive")


def make(*args, cwd):
    """A Makefile target with the project's venv (no bootstrap: the clone's lock files are newer than its stamp)."""
    return sh("make", *args, f"VENV={ROOT / '.venv'}", "STAMP=", cwd=cwd)


def artifacts(repo) -> dict[str, str]:
    """sha256 of every pipeline output file (dvclive's own summaries, which no stage declares, left out)."""
    files = [p for top in OUTPUTS for p in sorted((repo / top).rglob("*")) if p.is_file() and p.name != ".gitignore"]
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
            if p.relative_to(repo).parts[0] != "dvclive" or "plots" in p.parts}


def test_a_fresh_clone_pulls_every_artifact_and_reruns_nothing(repo, tmp_path):
    mine, theirs, remote = tmp_path / "mine", tmp_path / "theirs", tmp_path / "remote"
    shutil.copytree(repo, mine, symlinks=True)
    # other tests retrain stages of the shared `repo` (rm, ...): bring the copy up to date with its lock first
    sh(str(DVC), "repro", *yaml.safe_load((mine / "dvc.lock").read_text())["stages"], cwd=mine)
    sh(str(DVC), "remote", "modify", "local", "url", str(remote), cwd=mine)
    # As if `make all` had not run merge@pt: a stage that was never built has no lock entry and nothing in the remote.
    lock = yaml.safe_load((mine / "dvc.lock").read_text())
    del lock["stages"]["merge@pt"]
    (mine / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    shutil.rmtree(mine / "models/merged/pt")
    sh("git", "add", "-A", cwd=mine)
    tracked = sh("git", "diff", "--cached", "--name-only", cwd=mine).split()
    assert "dvc.lock" in tracked and not [f for f in tracked if f.startswith(("models/", "metrics/")) and
                                          not f.endswith(".gitignore")]  # outputs go to the remote, not git
    sh("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results", cwd=mine)
    make("push", cwd=mine)

    subprocess.run(["git", "clone", "-q", str(mine), str(theirs)], check=True)
    make("pull", cwd=theirs)
    assert artifacts(theirs) == artifacts(mine)
    assert len(artifacts(theirs)) > 100
    assert not (theirs / "models/merged/pt").exists()
    assert "Running stage" not in make("all", cwd=theirs)
    assert "Running stage" not in sh(str(DVC), "repro", *lock["stages"], cwd=theirs)  # every stage that was built
    table = sh(str(DVC), "metrics", "show", cwd=theirs)
    assert "metrics/sft.json" in table and "metrics/eval/dpo.json" in table
