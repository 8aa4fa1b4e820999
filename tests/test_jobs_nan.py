"""A loss that turns non-finite between two logging steps stops every job, naming the step,
with the last finite checkpoint the newest on disk."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jobs_testing import tiny_config, tiny_finetune_config, tiny_pretrain_config

from uamix_jax.jobs import finetune, pretrain, tune
from uamix_jax.training import runner

POISONED_STEP = 3  # logging and checkpoints every 2 steps: step 3 is neither

JOBS = {
    "tune": (tune.run, tiny_config),
    "pretrain": (pretrain.run, tiny_pretrain_config),
    "finetune": (finetune.run, tiny_finetune_config),
}


@pytest.mark.parametrize("job", sorted(JOBS))
def test_nan_at_a_non_logging_step_keeps_the_last_finite_checkpoint(job, tmp_path, monkeypatch):
    make_step = runner.make_step

    def poisoned_make_step(loss_fn, tx, finish=None):
        def nan_from_poisoned_step(params, state, batch, rngs):
            loss, aux = loss_fn(params, state, batch, rngs)
            return jnp.where(state.step + 1 >= POISONED_STEP, jnp.nan, loss), aux

        return make_step(nan_from_poisoned_step, tx, finish)

    monkeypatch.setattr(runner, "make_step", poisoned_make_step)
    run, make_config = JOBS[job]
    config = make_config(str(tmp_path / "data"))
    config.log_every = 2
    config.checkpoint.every_steps = 2
    workdir = str(tmp_path / "run")
    with pytest.raises(FloatingPointError, match=f"not finite at step {POISONED_STEP}") as error:
        run(config, workdir)
    assert "checkpoint (step 2)" in str(error.value)

    directory = os.path.join(workdir, "checkpoints")
    assert max(int(name) for name in os.listdir(directory) if name.isdigit()) == 2
    state = ocp.StandardCheckpointer().restore(os.path.join(directory, "2", "state"))
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state["params"]))
    assert int(state["first_nonfinite"]) == -1
