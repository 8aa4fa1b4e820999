"""The NNCLR projector / predictor against a PyTorch nn.Sequential re-statement (MAE-CT layout)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from uamix_jax.models import nnclr_head

IN_DIM, PROJ_HIDDEN, OUT_DIM, PRED_HIDDEN, BATCH = 12, 16, 8, 24, 10


@pytest.fixture(scope="module")
def head_and_variables():
    head = nnclr_head.NNCLRHead(PROJ_HIDDEN, OUT_DIM, PRED_HIDDEN)
    variables = head.init(jax.random.key(0), jnp.ones((BATCH, IN_DIM)), train=False)
    # Non-trivial BatchNorm affine parameters, so a swapped scale/bias would show.
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda a: jnp.asarray(rng.standard_normal(a.shape).astype(np.float32) * 0.5 + 1.0),
        variables["params"],
    )
    return head, {"params": params, "batch_stats": variables["batch_stats"]}


def torch_linear(kernel, bias=None):
    layer = torch.nn.Linear(*kernel.shape, bias=bias is not None)
    layer.weight.data = torch.from_numpy(np.asarray(kernel).T.copy())
    if bias is not None:
        layer.bias.data = torch.from_numpy(np.asarray(bias).copy())
    return layer


def torch_batch_norm(p):
    layer = torch.nn.BatchNorm1d(p["scale"].shape[0])  # PyTorch defaults: momentum 0.1, eps 1e-5
    layer.weight.data = torch.from_numpy(np.asarray(p["scale"]).copy())
    layer.bias.data = torch.from_numpy(np.asarray(p["bias"]).copy())
    return layer


def torch_head(params):
    """MAE-CT's projector and the NNCLR predictor (with its output bias) as nn.Sequential."""
    g, q = params["projector"], params["predictor"]
    projector = torch.nn.Sequential(
        torch_linear(g["fc1"]["kernel"]),
        torch_batch_norm(g["bn1"]),
        torch.nn.ReLU(),
        torch_linear(g["fc2"]["kernel"]),
        torch_batch_norm(g["bn2"]),
        torch.nn.ReLU(),
        torch_linear(g["fc3"]["kernel"]),
        torch_batch_norm(g["bn3"]),
    )
    predictor = torch.nn.Sequential(
        torch_linear(q["fc1"]["kernel"]),
        torch_batch_norm(q["bn1"]),
        torch.nn.ReLU(),
        torch_linear(q["fc2"]["kernel"], q["fc2"]["bias"]),
    )
    return projector, predictor


def test_head_matches_pytorch_in_train_and_eval_mode(head_and_variables):
    head, variables = head_and_variables
    x = np.random.default_rng(1).standard_normal((BATCH, IN_DIM)).astype(np.float32)
    (z, p), updates = head.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
    assert z.shape == (BATCH, OUT_DIM) and p.shape == (BATCH, OUT_DIM)

    projector, predictor = torch_head(variables["params"])
    projector.train(), predictor.train()
    z_ref = projector(torch.from_numpy(x))
    p_ref = predictor(z_ref)
    np.testing.assert_allclose(z, z_ref.detach().numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(p, p_ref.detach().numpy(), atol=1e-5, rtol=1e-5)

    stats = updates["batch_stats"]["projector"]["bn1"]
    torch_bn = projector[1]
    np.testing.assert_allclose(stats["mean"], torch_bn.running_mean.numpy(), atol=1e-5, rtol=1e-5)
    # flax keeps the biased batch variance in its running average, PyTorch the unbiased one.
    batch_var_unbiased = (torch_bn.running_var.numpy() - 0.9) / 0.1
    np.testing.assert_allclose(
        stats["var"], 0.9 + 0.1 * batch_var_unbiased * (BATCH - 1) / BATCH, rtol=1e-4
    )

    # Eval mode normalises with the running statistics: given the same statistics, the same output.
    for index, name in [(1, "bn1"), (4, "bn2"), (7, "bn3")]:
        own = updates["batch_stats"]["projector"][name]
        projector[index].running_mean.copy_(torch.tensor(np.asarray(own["mean"])))
        projector[index].running_var.copy_(torch.tensor(np.asarray(own["var"])))
    projector.eval()
    z_eval, _ = head.apply(
        {**variables, "batch_stats": updates["batch_stats"]}, jnp.asarray(x), train=False
    )
    np.testing.assert_allclose(
        z_eval, projector(torch.from_numpy(x)).detach().numpy(), atol=1e-5, rtol=1e-5
    )


def test_batch_norm_statistics_are_per_view(head_and_variables):
    """Each view passed on its own is normalised by its own statistics, whatever the other view is."""
    head, variables = head_and_variables
    rng = np.random.default_rng(2)
    view1 = jnp.asarray(rng.standard_normal((BATCH, IN_DIM)).astype(np.float32))
    view2 = 5.0 + 3.0 * view1[::-1]
    apply = jax.jit(lambda v: head.apply(variables, v, train=True, mutable=["batch_stats"])[0])
    z1, _ = apply(view1)
    z2, _ = apply(view2)
    z_joint, _ = apply(jnp.concatenate([view1, view2]))
    bn3 = variables["params"]["projector"]["bn3"]
    for z in (z1, z2):
        # The last BatchNorm maps each feature to mean = bias, std = |scale| over the view's batch.
        np.testing.assert_allclose(z.mean(axis=0), bn3["bias"], atol=1e-4)
        np.testing.assert_allclose(z.std(axis=0), np.abs(bn3["scale"]), rtol=1e-3)
    # Passing both views together would mix their statistics and change the result.
    assert not np.allclose(z_joint[:BATCH], z1, atol=1e-3)


def test_sharded_batch_uses_global_batch_statistics(head_and_variables):
    head, variables = head_and_variables
    x = jnp.asarray(np.random.default_rng(3).standard_normal((BATCH, IN_DIM)).astype(np.float32))
    mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
    apply = jax.jit(lambda v: head.apply(variables, v, train=True, mutable=["batch_stats"]))
    (z_sharded, _), stats_sharded = apply(sharded)
    (z, _), stats = apply(x)
    np.testing.assert_allclose(z_sharded, z, atol=1e-5)
    np.testing.assert_allclose(
        stats_sharded["batch_stats"]["projector"]["bn1"]["var"],
        stats["batch_stats"]["projector"]["bn1"]["var"],
        rtol=1e-5,
    )


def test_stacked_views_equal_one_call_per_view(head_and_variables):
    """(V, B, D) in one call: each view's outputs, the running statistics after the views in
    turn, and the parameter gradients are those of V calls, one per view."""
    head, variables = head_and_variables
    rng = np.random.default_rng(4)
    views = jnp.asarray(rng.standard_normal((3, BATCH, IN_DIM)).astype(np.float32))
    views = (
        views * jnp.array([1.0, 3.0, 0.5])[:, None, None]
        + jnp.array([0.0, 2.0, -1.0])[:, None, None]
    )
    weights = jnp.asarray(rng.standard_normal((3, BATCH, OUT_DIM)).astype(np.float32))

    def stacked(params):
        (z, p), updates = head.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            views,
            train=True,
            mutable=["batch_stats"],
        )
        return jnp.sum((z + p) * weights), (z, p, updates["batch_stats"])

    def per_view(params):
        stats, total, zs, ps = variables["batch_stats"], 0.0, [], []
        for view, weight in zip(views, weights):
            (z, p), updates = head.apply(
                {"params": params, "batch_stats": stats}, view, train=True, mutable=["batch_stats"]
            )
            stats = updates["batch_stats"]
            total += jnp.sum((z + p) * weight)
            zs.append(z), ps.append(p)
        return total, (jnp.stack(zs), jnp.stack(ps), stats)

    (_, got), got_grads = jax.value_and_grad(stacked, has_aux=True)(variables["params"])
    (_, want), want_grads = jax.value_and_grad(per_view, has_aux=True)(variables["params"])
    for a, b in zip(jax.tree.leaves((got, got_grads)), jax.tree.leaves((want, want_grads))):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    # The views' statistics differ, so an update from the pooled views would not match.
    assert not np.allclose(
        got[2]["projector"]["bn1"]["mean"], variables["batch_stats"]["projector"]["bn1"]["mean"]
    )
