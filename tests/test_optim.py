"""Optimiser masks: frozen leaves untouched and stateless, moments kept across stages."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from uamix_jax.training import optim

DEPTH = 3


def fake_params():
    """A params tree with the encoder's contract names, small shapes."""
    rng = np.random.default_rng(0)
    leaf = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
    block = lambda: {
        "norm1": {"scale": leaf(4), "bias": leaf(4)},
        "attn": {"qkv": {"kernel": leaf(4, 12), "bias": leaf(12)}},
        "mlp": {"fc1": {"kernel": leaf(4, 8), "bias": leaf(8)}},
    }
    encoder = {
        "cls_token": leaf(1, 1, 4),
        "patch_embed": {"proj": {"kernel": leaf(2, 2, 1, 4)}},
        "norm": {"scale": leaf(4), "bias": leaf(4)},
        **{f"blocks_{i}": block() for i in range(DEPTH)},
    }
    return {"encoder": encoder, "projector": {"Dense_0": {"kernel": leaf(4, 3)}}}


def optim_config(**overrides):
    config = ml_collections.ConfigDict(
        dict(
            base_lr=1e-2,
            lr_batch_factor=2.0,
            warmup_fraction=0.0,
            min_lr=0.0,
            b1=0.9,
            b2=0.95,
            eps=1e-8,
            layer_decay=0.65,
            grad_clip=None,
            weight_decay=[
                (r"encoder/(?!cls_token).*/kernel", 0.05),
                (r"(projector|predictor)/.*kernel", 1e-5),
            ],
        )
    )
    config.update(overrides)
    return config


def make(blocks, **overrides):
    return optim.make_optimizer(
        optim_config(**overrides),
        depth=DEPTH,
        trainable_blocks=blocks,
        global_batch=128,
        total_steps=10,
    )


def paths(tree):
    return {optim.path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)}


def run_steps(tx, params, state, steps=2):
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(steps):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def test_stage_zero_updates_only_head_and_frozen_leaves_stay_bit_identical():
    params = fake_params()
    tx = make(blocks=0)
    new, _ = run_steps(tx, params, tx.init(params))
    flat_before = dict(
        (optim.path_str(p), x) for p, x in jax.tree_util.tree_leaves_with_path(params)
    )
    flat_after = dict((optim.path_str(p), x) for p, x in jax.tree_util.tree_leaves_with_path(new))
    for path, before in flat_before.items():
        if path.startswith("projector"):
            assert not np.array_equal(before, flat_after[path]), path
        else:
            np.testing.assert_array_equal(before, flat_after[path], err_msg=path)


def test_frozen_leaves_hold_no_optimizer_state():
    params = fake_params()
    state = make(blocks=1).init(params)
    moment_paths = {p for p in paths(state) if "/mu/" in p or "/nu/" in p}
    owners = {p.split("/mu/")[-1].split("/nu/")[-1] for p in moment_paths}
    assert owners == {
        "projector/Dense_0/kernel",
        "encoder/norm/scale",
        "encoder/norm/bias",
        *(
            f"encoder/blocks_2/{leaf}"
            for leaf in (
                "norm1/scale",
                "norm1/bias",
                "attn/qkv/kernel",
                "attn/qkv/bias",
                "mlp/fc1/kernel",
                "mlp/fc1/bias",
            )
        ),
    }


def test_stage_change_keeps_moments_of_already_trainable_leaves():
    params = fake_params()
    old_tx = make(blocks=1)
    params, old_state = run_steps(old_tx, params, old_tx.init(params))
    new_state = optim.carry_over_state(old_state, make(blocks=2).init(params))
    old = {optim.path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(old_state)}
    new = {optim.path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(new_state)}
    kept = [p for p in new if p in old]
    assert any("blocks_2/attn/qkv/kernel" in p and "/mu/" in p for p in kept)
    for path in kept:
        np.testing.assert_array_equal(new[path], old[path], err_msg=path)
    fresh = [p for p in new if "blocks_1/" in p and "/nu/" in p]
    assert fresh and all(not np.any(new[p]) for p in fresh)
    assert all(int(x) == 2 for p, x in new.items() if p.endswith("count"))


def test_layer_decay_and_weight_decay_rules():
    assert optim.layer_decay_multiplier("encoder/blocks_2/mlp/fc1/kernel", DEPTH, 0.5) == 0.5
    assert optim.layer_decay_multiplier("encoder/blocks_0/mlp/fc1/kernel", DEPTH, 0.5) == 0.125
    assert optim.layer_decay_multiplier("encoder/patch_embed/proj/kernel", DEPTH, 0.5) == 0.0625
    assert optim.layer_decay_multiplier("projector/Dense_0/kernel", DEPTH, 0.5) == 1.0
    # Only weight decay acts when the gradient is zero: kernels shrink, biases/norms do not.
    params = fake_params()
    tx = make(blocks=DEPTH, base_lr=1.0, layer_decay=1.0)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    lr = 1.0 * 2.0 * 128 / 256
    flat_p = {optim.path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(params)}
    for p, u in jax.tree_util.tree_leaves_with_path(updates):
        path = optim.path_str(p)
        if path.endswith("kernel") and path.startswith("encoder/blocks"):
            np.testing.assert_allclose(u, -lr * 0.05 * flat_p[path], rtol=1e-6, err_msg=path)
        elif path.startswith("projector"):
            np.testing.assert_allclose(u, -lr * 1e-5 * flat_p[path], rtol=1e-6)
        else:
            np.testing.assert_array_equal(u, 0.0, err_msg=path)


def test_schedule_warmup_then_cosine():
    schedule = optim.learning_rate_schedule(
        optim_config(warmup_fraction=0.2, base_lr=1e-4), global_batch=256, total_steps=100
    )
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(float(schedule(20)), 2e-4, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(100)), 0.0, atol=1e-12)
    assert float(schedule(10)) == pytest.approx(1e-4)


@pytest.mark.parametrize(
    "stages, message",
    [
        ([], "empty"),
        ([(1, 0)], "epoch 0"),
        ([(0, 0), (0, 1)], "strictly increasing"),
        ([(0, 9)], "outside"),
        ([(0, 1, 2)], "pair"),
    ],
)
def test_validate_stages_names_the_field(stages, message):
    with pytest.raises(ValueError, match=message) as err:
        optim.validate_stages(stages, DEPTH, "config.schedule.stages")
    assert "config.schedule.stages" in str(err.value)


def test_a_parameter_no_rule_covers_is_named():
    params = {**fake_params(), "classifier": {"kernel": jnp.zeros((4, 2))}}
    with pytest.raises(ValueError, match=r"no trainable or frozen rule: \['classifier/kernel'\]"):
        make(1).init(params)
