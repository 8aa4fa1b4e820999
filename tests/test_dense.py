"""CpuDense: nn.Dense's parameters and values; bf16 backward through float32 dots."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_chunked_attention import _equations

from uamix_jax.models.cpu_kernels import CpuDense


def _inputs(seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((2, 5, 6)), jnp.float32)


def test_float32_layer_is_nn_dense():
    x = _inputs()
    ours = CpuDense(4, kernel_init=nn.initializers.lecun_normal())
    theirs = nn.Dense(4, kernel_init=nn.initializers.lecun_normal())
    variables = ours.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, variables) == {"params": {"kernel": (6, 4), "bias": (4,)}}
    reference = theirs.init(jax.random.key(0), x)
    np.testing.assert_array_equal(variables["params"]["kernel"], reference["params"]["kernel"])
    variables = {"params": {**variables["params"], "bias": jnp.arange(4.0)}}
    np.testing.assert_allclose(ours.apply(variables, x), theirs.apply(variables, x), atol=1e-6)


def _loss(layer, variables, x, weights):
    return jnp.sum(layer.apply(variables, x).astype(jnp.float32) * weights)


def test_bfloat16_gradients_match_float32_autodiff():
    x = _inputs()
    weights = _inputs(1)[..., :4]
    layer = CpuDense(4, dtype=jnp.bfloat16)
    variables = layer.init(jax.random.key(0), x)
    variables = {"params": {**variables["params"], "bias": jnp.linspace(-1.0, 1.0, 4)}}
    grad = jax.grad(_loss, argnums=(1, 2))
    got_params, got_x = grad(layer, variables, x, weights)
    want_params, want_x = grad(nn.Dense(4), variables, x, weights)
    assert got_params["params"]["kernel"].dtype == jnp.float32  # params stay float32
    for got, want in [
        (got_x, want_x),
        (got_params["params"]["kernel"], want_params["params"]["kernel"]),
        (got_params["params"]["bias"], want_params["params"]["bias"]),
    ]:
        error = np.abs(np.asarray(got) - np.asarray(want)).max()
        assert error < 0.02 * np.abs(np.asarray(want)).max(), error


def test_bfloat16_dots_return_float32_and_the_bias_gradient_is_a_dot():
    x = _inputs().astype(jnp.bfloat16)
    layer = CpuDense(4, dtype=jnp.bfloat16)
    variables = layer.init(jax.random.key(0), x)
    jaxpr = jax.make_jaxpr(jax.grad(_loss, argnums=1), static_argnums=0)(
        layer, variables, x, jnp.ones((2, 5, 4))
    )
    equations = list(_equations(jaxpr.jaxpr))
    dots = [eqn for eqn in equations if eqn.primitive.name == "dot_general"]
    assert len(dots) >= 4  # forward, input, kernel and bias gradients
    assert all(eqn.outvars[0].aval.dtype == jnp.float32 for eqn in dots)
    row_sums = [
        eqn
        for eqn in equations
        if eqn.primitive.name == "reduce_sum" and eqn.outvars[0].aval.shape  # not the loss
    ]
    assert not row_sums


# 4 outputs: d_out is narrower than [x, 1] (7 wide); 9: wider. The backward pass contracts
# the two in either order (cpu_kernels/dense.py, `_dense_ones_column_backward`).
@pytest.mark.parametrize("features", [4, 9])
def test_float32_cpu_path_matches_autodiff_of_nn_dense(features):
    """The plain forward product and the [x, 1] backward pass: nn.Dense's values and gradients."""
    x = _inputs()
    weights = jnp.asarray(np.random.default_rng(1).standard_normal((2, 5, features)))
    variables = CpuDense(features).init(jax.random.key(0), x)
    bias = jnp.linspace(-1.0, 1.0, features)
    variables = {"params": {**variables["params"], "bias": bias}}
    np.testing.assert_allclose(
        CpuDense(features).apply(variables, x),
        nn.Dense(features).apply(variables, x),
        rtol=1e-6,
        atol=1e-6,
    )
    grad = jax.grad(_loss, argnums=(1, 2))
    (got_params, got_x), (want_params, want_x) = (
        grad(layer, variables, x, weights) for layer in (CpuDense(features), nn.Dense(features))
    )
    np.testing.assert_allclose(got_x, want_x, rtol=1e-5, atol=1e-5)
    for name in ("kernel", "bias"):
        np.testing.assert_allclose(
            got_params["params"][name], want_params["params"][name], rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("features", [4, 9])
def test_float32_cpu_bias_gradient_comes_from_the_weight_gradient_dot(features):
    x = _inputs()
    layer = CpuDense(features)
    variables = layer.init(jax.random.key(0), x)
    jaxpr = jax.make_jaxpr(jax.grad(_loss, argnums=1), static_argnums=0)(
        layer, variables, x, jnp.ones((2, 5, features))
    )
    equations = list(_equations(jaxpr.jaxpr))
    # (6 inputs + the ones column) x features, the narrower operand first
    shape = (7, features) if features >= 7 else (features, 7)
    weight_gradient = [
        eqn
        for eqn in equations
        if eqn.primitive.name == "dot_general" and eqn.outvars[0].aval.shape == shape
    ]
    assert len(weight_gradient) == 1
    assert not [
        eqn for eqn in equations if eqn.primitive.name == "reduce_sum" and eqn.outvars[0].aval.shape
    ]


def test_float32_cpu_forward_pass_is_the_plain_product():
    """A frozen block runs only the forward pass: one (6 -> 4) product, no [x, 1] built."""
    x = _inputs()
    layer = CpuDense(4)
    variables = layer.init(jax.random.key(0), x)
    jaxpr = jax.make_jaxpr(layer.apply)(variables, x)
    equations = list(_equations(jaxpr.jaxpr))
    dots = [eqn for eqn in equations if eqn.primitive.name == "dot_general"]
    assert [eqn.invars[0].aval.shape for eqn in dots] == [(2, 5, 6)]
    assert not [eqn for eqn in equations if eqn.primitive.name in ("concatenate", "pad")]
