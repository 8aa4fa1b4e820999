"""The tuning job end to end (tiny), and a SIGKILLed main.py resumed across a stage change."""

import json
import os
import subprocess

import jax
import numpy as np
import pytest
import jobs_testing
from jobs_testing import tiny_config

from uamix_jax.models import audiomae
from uamix_jax.jobs import tune

TOTAL_STEPS = 6  # 24 clips / batch 8 = 3 steps an epoch, 2 epochs


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run; its data set is built into its workdir, as the demo does."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    return workdir, tune.run(tiny_config(), workdir)


def final_state(workdir):
    """(step, raw train-state tree) of the run's newest checkpoint."""
    return jobs_testing.final_state(os.path.join(workdir, "checkpoints"))


def test_demo_runs_end_to_end_with_all_outputs(reference):
    workdir, result = reference
    assert result["step"] == TOTAL_STEPS and np.isfinite(result["loss"])
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    stages = [r for r in records if "stage" in r]
    assert [(r["step"], r["trainable_blocks"]) for r in stages] == [(0, 0), (3, 2)]
    assert stages[0]["trainable_params"] < stages[1]["trainable_params"]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, TOTAL_STEPS + 1))
    assert all(0.0 <= r["nn_accuracy"] <= 1.0 and r["clips_per_s"] > 0 for r in steps)
    assert any(
        name.startswith("events.out.tfevents")
        for name in os.listdir(os.path.join(workdir, "tensorboard"))
    )
    model, variables = audiomae.load(result["encoder_dir"])
    step, state = final_state(workdir)
    assert step == TOTAL_STEPS
    jax.tree.map(np.testing.assert_array_equal, variables["params"], state["params"]["encoder"])


def test_run_again_after_finishing_does_nothing(reference):
    workdir, _ = reference
    config = tiny_config(os.path.join(workdir, "data"))
    assert tune.run(config, workdir)["step"] == TOTAL_STEPS


def test_sigkilled_run_resumes_to_identical_state(reference, tmp_path):
    reference_dir, _ = reference
    workdir = str(tmp_path / "killed")
    # Checkpoints at steps 1, 3 (the end of stage 0) and 6: the kill comes right after step 3,
    # while stage 1 compiles, so the resumed run must switch stage on restart.
    command = jobs_testing.main_command(
        "tune", workdir, os.path.join(reference_dir, "data"), "--config.checkpoint.every_steps=3"
    )
    env = jobs_testing.subprocess_env()
    checkpoints = os.path.join(workdir, "checkpoints")
    process = subprocess.Popen(
        command, cwd=jobs_testing.REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    jobs_testing.kill_when_saved([process], checkpoints, 3)
    assert jobs_testing.checkpoint_steps(checkpoints)[-1] == 3

    subprocess.run(command, cwd=jobs_testing.REPO, env=env, check=True, capture_output=True)
    step, resumed = jobs_testing.final_state(checkpoints)
    _, uninterrupted = final_state(reference_dir)
    assert step == TOTAL_STEPS
    jax.tree.map(np.testing.assert_array_equal, resumed, uninterrupted)
