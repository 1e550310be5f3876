"""A training stage killed after a checkpoint resumes from it and ends as the run that was never interrupted."""
import json
import os
import shutil
import subprocess
import time

from tests.pipeline import DVC, kill_tree, set_params, sh


def curves(repo) -> dict[str, str]:
    return {str(p.relative_to(repo)): p.read_text() for p in (repo / "dvclive/sft/plots/metrics").rglob("*.tsv")}


def test_sft_killed_after_its_first_checkpoint_resumes_to_the_same_result(repo, tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy, symlinks=True)
    set_params(copy, {"checkpoints": {"every_steps": 10}})  # the fixture's SFT ran through: 30 steps, no checkpoint
    through, through_curves = json.loads((copy / "metrics/sft.json").read_text()), curves(copy)
    adapter = (copy / "models/sft/adapter_model.safetensors").read_bytes()

    env = {**os.environ, "PYTHONPATH": str(copy), "PATH": f"{DVC.parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.Popen([str(DVC), "repro", "--force", "--single-item", "sft"], cwd=copy, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while not list(copy.glob("checkpoints/sft/*/checkpoint-10/trainer_state.json")):
        assert run.poll() is None and time.monotonic() < deadline, "no checkpoint at step 10"
        time.sleep(0.2)
    kill_tree(run)  # dvc and the stage it runs
    assert not (copy / "models/sft").exists()  # DVC removed the old output before the run; none half-written

    out = sh(str(DVC), "repro", "--force", "--single-item", "sft", cwd=copy)
    assert "sft: resuming from step 10 (checkpoints/sft/" in out
    resumed = json.loads((copy / "metrics/sft.json").read_text())
    assert resumed.pop("resumed_from_step") == 10
    for record in (resumed, through, resumed["provenance"], through["provenance"]):
        # the clock's, not the run's; and the tree is dirty now: params.yaml was edited above
        for key in ("seconds", "tokens_per_second", "wall_seconds", "git_dirty"):
            record.pop(key, None)
    assert resumed == through
    assert curves(copy) == through_curves  # every logged step's loss, learning rate and gradient norm
    assert (copy / "models/sft/adapter_model.safetensors").read_bytes() == adapter
    assert not (copy / "checkpoints/sft").exists()
