"""The jitted train step: what is frozen stays bit-identical, and 1 vs 2 devices agree."""

import jax
import numpy as np
import pytest
from jobs_testing import tiny_config

from uamix_jax.jobs import tune
from uamix_jax.training import optim, runner, sharding, train_step

TRAINABLE_BLOCKS = 1  # of the tiny encoder's 2: blocks_1 trains, blocks_0 is frozen


def random_batches(config, count):
    rng = np.random.default_rng(0)
    shape = (config.data.batch_size, config.data.target_length, 128)
    return [
        {
            "fbank": rng.normal(size=shape).astype(np.float32),
            "id": np.arange(i * shape[0], (i + 1) * shape[0], dtype=np.int32),
            "label": rng.integers(0, 4, shape[0]).astype(np.int32),
        }
        for i in range(count)
    ]


def run_steps(devices, steps=2):
    """(initial params, final state, per-step losses) of a fixed run on a mesh of ``devices``."""
    config = tiny_config()
    # Adam's m / sqrt(v) turns float32 rounding of near-zero gradients into whole-lr steps
    # of either sign. With eps >> sqrt(v) Adam is momentum SGD at lr / eps: updates stay
    # proportional to gradients, so comparing devices measures the data-parallel arithmetic.
    config.optim.update(dict(eps=1e3, base_lr=1e2))
    encoder, variables = tune.build_encoder(config, jax.random.PRNGKey(0))
    head = train_step.make_head(config.method, "float32")
    tx = optim.make_optimizer(
        config.optim,
        depth=2,
        trainable_blocks=TRAINABLE_BLOCKS,
        global_batch=config.data.batch_size,
        total_steps=10,
    )
    mesh = sharding.make_mesh(devices)
    state = train_step.create_state(config.method, variables, head, 32, tx, jax.random.PRNGKey(1))
    initial = jax.device_get(state.params)
    state = sharding.replicate(state, mesh)
    step = runner.jit_step(
        train_step.make_step(
            encoder, head, tx, config.method, config.data.augment, TRAINABLE_BLOCKS
        ),
        mesh,
    )
    losses = []
    for batch in random_batches(config, steps):
        state, metrics = step(state, sharding.global_batch(batch, mesh))
        losses.append(float(metrics["loss"]))
    return initial, jax.device_get(state), losses


@pytest.fixture(scope="module")
def two_device_run():
    assert jax.device_count() == 2, "tests/conftest.py should give 2 CPU devices"
    return run_steps(jax.devices())


def flat(tree):
    return {optim.path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def test_frozen_params_bit_identical_trainable_params_change(two_device_run):
    initial, state, losses = two_device_run
    assert all(np.isfinite(losses))
    before, after = flat(initial), flat(state.params)
    frozen = [
        p
        for p in before
        if p.startswith(("encoder/blocks_0/", "encoder/patch_embed/", "encoder/cls_token"))
    ]
    trainable = [p for p in before if p not in frozen]
    assert frozen and any(p.startswith("encoder/blocks_1/") for p in trainable)
    for path in frozen:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    for path in trainable:
        assert not np.array_equal(after[path], before[path]), f"{path} did not change"


def test_optimizer_state_only_for_trainable_leaves(two_device_run):
    _, state, _ = two_device_run
    moment_owners = {p.split("/mu/")[1] for p in flat(state.opt_state) if "/mu/" in p}
    expected = {
        p
        for p in flat(state.params)
        if p.startswith(("head/", "encoder/blocks_1/", "encoder/norm/"))
    }
    assert moment_owners == expected


def test_queue_and_step_advance(two_device_run):
    _, state, _ = two_device_run
    assert int(state.step) == 2
    queue = state.extras["queue"]
    assert (queue.ids[:16] >= 0).all() and int(queue.ptr) == 0


def test_one_and_two_devices_agree(two_device_run):
    initial, two, two_losses = two_device_run
    _, one, one_losses = run_steps(jax.devices()[:1])
    # Reductions split over devices sum in another order: float32 rounding, which the head's
    # BatchNorm magnifies (a random encoder's pooled features vary little across clips).
    np.testing.assert_allclose(one_losses, two_losses, rtol=1e-4)
    start, one, two = flat(initial), flat(one.params), flat(two.params)
    largest_step = max(np.abs(two[p] - start[p]).max() for p in start)
    for path in start:
        delta_one, delta_two = one[path] - start[path], two[path] - start[path]
        # Each leaf's update agrees to 0.1% of its largest step. The absolute floor covers the
        # leaves whose exact gradient is 0 (a bias right before a normalisation) and the
        # rounding of p + update.
        tolerance = (
            1e-3 * np.abs(delta_two).max()
            + 1e-5 * largest_step
            + 4 * np.spacing(np.abs(start[path]))
        )
        assert np.all(np.abs(delta_one - delta_two) <= tolerance), path
