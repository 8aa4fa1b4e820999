"""chunked_attention against PyTorch's scaled_dot_product_attention, values and gradients."""

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from uamix_jax.models.cpu_kernels import chunked_attention as chunked

TOLERANCE = 2e-5  # float32, max abs difference of outputs and gradients


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]


def _torch_values_and_grads(q, k, v, weights):
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv)
    (out * torch.from_numpy(weights)).sum().backward()
    return [t.detach().numpy() for t in (out, tq.grad, tk.grad, tv.grad)]


def _jax_values_and_grads(q, k, v, weights):
    def loss(q, k, v):
        out = chunked.chunked_attention(q, k, v)
        return jnp.sum(out * weights), out

    grads, out = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return [np.asarray(x) for x in (out, *grads)]


@pytest.mark.parametrize(
    "shape,chunk_bytes",
    [
        ((2, 3, 17, 8), 4 * 17 * 17 * 2),  # 6 pairs, 1 per device, chunks of 2: 2 chunks
        ((1, 5, 33, 16), 4 * 33 * 33 * 3),  # batch 1 on 2 devices: no split; 5 prime: chunks of 1
        ((4, 2, 9, 4), 1 << 30),  # one chunk per device
    ],
)
def test_matches_torch_sdpa(shape, chunk_bytes, monkeypatch):
    monkeypatch.setattr(chunked, "CHUNK_SCORE_BYTES", chunk_bytes)
    q, k, v, weights = _inputs(shape)
    expected = _torch_values_and_grads(q, k, v, weights)
    for name, got, want in zip(
        ("out", "dq", "dk", "dv"), _jax_values_and_grads(q, k, v, weights), expected
    ):
        error = np.abs(got - want).max()
        assert error <= TOLERANCE, f"{name}: max abs error {error}"


def test_chunk_layout_follows_devices_and_budget(monkeypatch):
    monkeypatch.setattr(chunked, "CHUNK_SCORE_BYTES", 4 * 10 * 10 * 4)
    assert jax.device_count() == 2  # conftest
    assert chunked._chunk_layout(batch=6, heads=4, length=10) == (2, 4)
    assert chunked._chunk_layout(batch=3, heads=4, length=10) == (1, 4)
    assert chunked._chunk_layout(batch=2, heads=3, length=10) == (2, 3)
    assert chunked._chunk_layout(batch=2, heads=3, length=1000) == (2, 1)


def test_batch_sharded_over_devices_needs_no_collectives():
    q, k, v, weights = _inputs((4, 2, 9, 8))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded = NamedSharding(mesh, PartitionSpec("data"))
    args = [jax.device_put(x, sharded) for x in (q, k, v)]

    def loss(q, k, v):
        return jnp.sum(chunked.chunked_attention(q, k, v) * weights)

    step = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    hlo = step.lower(*args).compile().as_text()
    assert not any(op in hlo for op in ("all-gather", "all-to-all", "collective-permute"))
    grads = step(*args)
    assert grads[0].sharding.spec == PartitionSpec("data")
    expected = _torch_values_and_grads(q, k, v, weights)[1:]
    for got, want in zip(grads, expected):
        assert np.abs(np.asarray(got) - want).max() <= TOLERANCE


def _equations(jaxpr):
    """Every equation of a jaxpr, those of its sub-jaxprs (map bodies, custom_vjp) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    yield from _equations(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    yield from _equations(sub)


def test_bfloat16_keeps_softmax_in_float32_and_input_dtypes():
    q, k, v, weights = _inputs((2, 2, 16, 8))
    low = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)]

    def loss(q, k, v):
        return jnp.sum(chunked.chunked_attention(q, k, v).astype(jnp.float32) * weights)

    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(*low)
    exps = [eqn for eqn in _equations(jaxpr.jaxpr) if eqn.primitive.name == "exp"]
    assert len(exps) == 2  # forward and recomputation in the backward pass
    assert all(eqn.outvars[0].aval.dtype == jnp.float32 for eqn in exps)
    assert [x.aval.dtype for x in jaxpr.jaxpr.outvars] == [jnp.bfloat16] * 3
    expected = _torch_values_and_grads(q, k, v, weights)
    got = _jax_values_and_grads(*low, weights)
    for name, g, want in zip(("out", "dq", "dk", "dv"), got, expected):
        error = np.abs(g.astype(np.float32) - want).max()
        assert error < 0.05 * np.abs(want).max(), f"{name}: max abs error {error}"
