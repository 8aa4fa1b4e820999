"""The pretraining job end to end on a few synthetic clips: outputs, and resuming a finished run."""

import json
import os

import jax
import numpy as np
import pytest
from jobs_testing import tiny_pretrain_config as tiny_config

from configs import demo, pretrain_demo
from uamix_jax.models import audiomae, mae
from uamix_jax.jobs import pretrain as pretrain_run


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    return workdir, pretrain_run.run(tiny_config(), workdir)


def test_pretraining_job_writes_mae_and_picture_and_resumes(finished_run):
    workdir, result = finished_run
    assert result["step"] == 4 and np.isfinite(result["loss"])
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert os.path.getsize(os.path.join(workdir, pretrain_run.RECONSTRUCTIONS_FILE)) > 0
    assert os.listdir(os.path.join(workdir, "tensorboard"))

    model, variables = mae.load(result["mae_dir"])
    encoder, encoder_variables = audiomae.load(result["encoder_dir"])  # tuning's init_checkpoint
    assert encoder.config == model.config.encoder
    jax.tree.map(np.testing.assert_array_equal, encoder_variables, mae.encoder_variables(variables))

    # The same command again finds the last checkpoint and does no further step.
    again = pretrain_run.run(tiny_config(), workdir)
    assert again["step"] == 4
    jax.tree.map(np.testing.assert_array_equal, mae.load(again["mae_dir"])[1], variables)


def test_continues_from_an_mae_checkpoint(finished_run, tmp_path):
    """With the learning rate at zero, continuing leaves the starting weights exactly."""
    workdir, finished = finished_run
    start_dir = finished["mae_dir"]
    config = tiny_config()
    config.update(dict(init_checkpoint=start_dir, seed=1))
    config.data.data_dir = os.path.join(workdir, "data")  # built by the finished run
    config.schedule.num_epochs = 1
    config.optim.base_lr = 0.0
    result = pretrain_run.run(config, str(tmp_path / "continued"))
    jax.tree.map(
        np.testing.assert_array_equal, mae.load(result["mae_dir"])[1], mae.load(start_dir)[1]
    )

    config.data.target_length = 64
    with pytest.raises(ValueError, match="config.init_checkpoint"):
        pretrain_run.run(config, str(tmp_path / "mismatch"))


def test_bad_masking_kind_is_named_before_any_work(tmp_path):
    config = tiny_config()
    config.masking.kind = "blocks"
    with pytest.raises(ValueError, match="config.masking.kind"):
        pretrain_run.run(config, str(tmp_path))


def test_demo_pretraining_fits_the_demo_encoder_and_data():
    """configs/pretrain_demo.py pretrains exactly the encoder configs/demo.py tunes, on its data."""
    tuning, pretraining = demo.tune_config(), pretrain_demo.get_config()
    assert (pretraining.model.preset, pretraining.model.overrides) == (
        tuning.model.preset,
        tuning.model.overrides,
    )
    for field in (
        "name",
        "builder_config",
        "split",
        "classes",
        "target_length",
        "norm",
        "synthetic",
    ):
        assert pretraining.data[field] == tuning.data[field], field
