"""Jobs as a user runs them: main.py in a subprocess, SIGKILLed mid-run, then the same
command again, ending bit-identical to an uninterrupted run."""

import json
import os
import subprocess

import jax
import jobs_testing
import numpy as np
import pytest

from uamix_jax.evaluation import fewshot_report
from uamix_jax.jobs import demo, finetune


@pytest.fixture(scope="module")
def demo_reference(tmp_path_factory):
    """An uninterrupted tiny demo (pretrain, tune, few-shot report), in this process."""
    workdir = str(tmp_path_factory.mktemp("demo"))
    return workdir, demo.run(jobs_testing.tiny_demo_config(), workdir)


def test_demo_composes_pretraining_tuning_and_the_fewshot_report(demo_reference):
    workdir, result = demo_reference
    assert result["step"] == 4 and np.isfinite(result["loss"])
    for encoder in ("MAE", "uaMix-MAE"):
        for classifier in ("prototype", "logreg"):
            assert 0.0 <= result["fewshot"][encoder][classifier]["mean"] <= 1.0
    for written in (fewshot_report.RESULTS_FILE, fewshot_report.TSNE_FILE):
        assert os.path.getsize(os.path.join(workdir, written)) > 0
    # Pretraining and tuning read one data set, built once in WORKDIR/data.
    assert os.path.isdir(os.path.join(workdir, "data"))
    assert not os.path.exists(os.path.join(workdir, demo.PRETRAIN_DIR, "data"))
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]


def test_demo_killed_during_pretraining_resumes_to_identical_state(demo_reference, tmp_path):
    """The demo's data keep only some classes (data.classes), so resuming also checks the
    iterator state of a class-filtered source."""
    reference_dir, _ = demo_reference
    workdir = str(tmp_path / "killed")
    command = jobs_testing.main_command("demo", workdir)
    env = jobs_testing.subprocess_env()
    process = subprocess.Popen(
        command, cwd=jobs_testing.REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    pretrain_checkpoints = os.path.join(workdir, demo.PRETRAIN_DIR, "checkpoints")
    jobs_testing.kill_when_saved([process], pretrain_checkpoints, 2)
    assert jobs_testing.checkpoint_steps(pretrain_checkpoints)[-1] < 4, "pretraining finished"
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))

    finished = subprocess.run(
        command, cwd=jobs_testing.REPO, env=env, capture_output=True, text=True
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    for stage_dir in (demo.PRETRAIN_DIR, ""):
        step, resumed = jobs_testing.final_state(os.path.join(workdir, stage_dir, "checkpoints"))
        expected_step, expected = jobs_testing.final_state(
            os.path.join(reference_dir, stage_dir, "checkpoints")
        )
        assert step == expected_step == 4
        jax.tree.map(np.testing.assert_array_equal, resumed, expected)
    # The console: progress and one line per stage, no library INFO logs.
    assert "few-shot accuracy" in finished.stdout
    assert "checkpoint_manager.py" not in finished.stderr


def test_finetune_killed_mid_run_resumes_to_identical_state(tmp_path):
    reference_dir = str(tmp_path / "reference")
    config = jobs_testing.tiny_finetune_config()
    finetune.run(config, reference_dir)
    data_dir = os.path.join(reference_dir, "data")

    workdir = str(tmp_path / "killed")
    command = jobs_testing.main_command("finetune", workdir, data_dir)
    env = jobs_testing.subprocess_env()
    process = subprocess.Popen(
        command, cwd=jobs_testing.REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoints = os.path.join(workdir, "checkpoints")
    jobs_testing.kill_when_saved([process], checkpoints, 2)
    assert jobs_testing.checkpoint_steps(checkpoints)[-1] < 4, "the run finished"
    subprocess.run(command, cwd=jobs_testing.REPO, env=env, check=True, capture_output=True)
    step, resumed = jobs_testing.final_state(checkpoints)
    _, expected = jobs_testing.final_state(os.path.join(reference_dir, "checkpoints"))
    assert step == 4
    jax.tree.map(np.testing.assert_array_equal, resumed, expected)
    results = json.load(open(os.path.join(workdir, finetune.RESULTS_FILE)))["results"]
    expected_results = json.load(open(os.path.join(reference_dir, finetune.RESULTS_FILE)))
    assert results == expected_results["results"]


def test_demo_with_tune_init_checkpoint_skips_pretraining(tmp_path):
    config = jobs_testing.tiny_demo_config()
    config.tune.init_checkpoint = str(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="config.init_checkpoint"):
        demo.run(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / demo.PRETRAIN_DIR)
