"""CpuLayerNorm against PyTorch's nn.LayerNorm, values and gradients; nn.LayerNorm's parameters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from test_chunked_attention import _equations

from uamix_jax.models.cpu_kernels import CpuLayerNorm

EPSILON = 1e-6  # AudioMAE's
TOLERANCE = 2e-5  # float32, max abs difference relative to the largest reference value


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = (3.0 + 2.0 * rng.standard_normal(shape)).astype(np.float32)  # rows off zero mean
    weights = rng.standard_normal(shape).astype(np.float32)
    scale = (1.0 + 0.5 * rng.standard_normal(shape[-1])).astype(np.float32)
    bias = rng.standard_normal(shape[-1]).astype(np.float32)
    return x, weights, scale, bias


def _torch_values_and_grads(x, weights, scale, bias):
    norm = torch.nn.LayerNorm(x.shape[-1], eps=EPSILON)
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(scale))
        norm.bias.copy_(torch.from_numpy(bias))
    tx = torch.tensor(x, requires_grad=True)
    out = norm(tx)
    (out * torch.from_numpy(weights)).sum().backward()
    return [t.detach().numpy() for t in (out, tx.grad, norm.weight.grad, norm.bias.grad)]


def _loss(variables, x, weights, dtype=None):
    out = CpuLayerNorm(EPSILON, dtype).apply(variables, x)
    return jnp.sum(out.astype(jnp.float32) * weights), out


@pytest.mark.parametrize("shape", [(2, 7, 16), (3, 5), (1, 4, 2, 33)])
def test_matches_torch_layer_norm(shape):
    x, weights, scale, bias = _inputs(shape)
    variables = {"params": {"scale": scale, "bias": bias}}
    grad = jax.jit(jax.grad(_loss, argnums=(0, 1), has_aux=True))
    (d_params, d_x), out = grad(variables, x, weights)
    got = [out, d_x, d_params["params"]["scale"], d_params["params"]["bias"]]
    expected = _torch_values_and_grads(x, weights, scale, bias)
    for name, g, want in zip(("out", "dx", "dscale", "dbias"), got, expected):
        error = np.abs(np.asarray(g) - want).max()
        assert error < TOLERANCE * max(1.0, np.abs(want).max()), f"{name}: {error}"


def test_parameters_and_default_values_are_nn_layer_norm():
    x = _inputs((2, 5, 8))[0]
    variables = CpuLayerNorm(EPSILON).init(jax.random.key(0), x)
    reference = nn.LayerNorm(EPSILON).init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, reference)
    np.testing.assert_allclose(
        CpuLayerNorm(EPSILON).apply(variables, x),
        nn.LayerNorm(EPSILON).apply(reference, x),
        atol=1e-5,
    )


def test_bfloat16_input_float32_statistics_and_dtypes():
    x, weights, scale, bias = _inputs((2, 6, 16))
    variables = {"params": {"scale": scale, "bias": bias}}
    low = jnp.asarray(x, jnp.bfloat16)
    (d_params, d_x), out = jax.grad(_loss, argnums=(0, 1), has_aux=True)(
        variables, low, weights, jnp.bfloat16
    )
    assert out.dtype == jnp.bfloat16 and d_x.dtype == jnp.bfloat16
    assert d_params["params"]["scale"].dtype == jnp.float32
    # The reference sees the same bf16-rounded input: what remains is the output rounding.
    expected = _torch_values_and_grads(np.asarray(low, np.float32), weights, scale, bias)
    for name, g, want in zip(("out", "dx"), (out, d_x), expected):
        error = np.abs(np.asarray(g, np.float32) - want).max()
        assert error < 0.02 * np.abs(want).max(), f"{name}: {error}"
    # Undeclared dtype: nn.LayerNorm's promotion of a bf16 input with float32 params.
    assert CpuLayerNorm(EPSILON).apply(variables, low).dtype == jnp.float32


def test_cpu_sums_are_products_with_ones():
    """Every sum, forward and backward, is a dot (module docstring)."""
    x, weights, scale, bias = _inputs((2, 6, 16))
    variables = {"params": {"scale": scale, "bias": bias}}
    jaxpr = jax.make_jaxpr(jax.grad(lambda v, x: _loss(v, x, weights)[0], argnums=(0, 1)))(
        variables, x
    )
    equations = list(_equations(jaxpr.jaxpr))
    sums = [
        eqn
        for eqn in equations
        if eqn.primitive.name == "reduce_sum" and eqn.outvars[0].aval.shape  # not the loss
    ]
    assert not sums
    dots = [eqn for eqn in equations if eqn.primitive.name == "dot_general"]
    assert len(dots) == 6  # mean, variance; two row means and two column sums backward
