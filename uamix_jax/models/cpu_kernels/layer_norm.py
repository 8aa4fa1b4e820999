"""`CpuLayerNorm`: LayerNorm whose statistics and gradient sums are products with ones.

XLA:CPU turns the row and column sums of a LayerNorm, forward and backward, into
single-threaded reduce-window passes; a product with a vector of ones runs instead as a
multi-threaded matrix-vector product. Measurements: benchmarks/NOTES.md#cpu-kernels-layer-norm.

The backward pass is written out so that it recomputes the normalised input from x and
the saved row statistics (nothing of the input's size is stored besides x itself, which
the previous layer keeps anyway):

    x_hat = (x - mean) * rstd,  y = x_hat * scale + bias
    dx = rstd * (dy * scale - mean(dy * scale) - x_hat * mean(dy * scale * x_hat))
    dscale = sum over rows of dy * x_hat,  dbias = sum over rows of dy

Statistics are float32 whatever the input dtype; the variance is the mean of squared
deviations (two passes, as PyTorch computes it). Parameters are nn.LayerNorm's ('scale',
'bias', float32), so the two kernel sets share checkpoints.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _row_mean(x: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Mean over the last axis of x * weights (weights over that axis), keepdims."""
    if weights is None:
        return (x @ jnp.ones((x.shape[-1], 1), x.dtype)) / x.shape[-1]
    return x @ (weights / x.shape[-1])[:, None]


def _column_sum(x: jax.Array) -> jax.Array:
    """Sum over every axis but the last."""
    rows = x.reshape(-1, x.shape[-1])
    return jnp.ones(rows.shape[0], x.dtype) @ rows


def _statistics(x32: jax.Array, epsilon: float) -> tuple[jax.Array, jax.Array]:
    mean = _row_mean(x32)
    return mean, jax.lax.rsqrt(_row_mean(jnp.square(x32 - mean)) + epsilon)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def layer_norm(
    x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float, dtype: Any
) -> jax.Array:
    """(x - mean) / sqrt(var + epsilon) * scale + bias over the last axis, returned in dtype."""
    return _layer_norm_forward(x, scale, bias, epsilon, dtype)[0]


def _layer_norm_forward(x, scale, bias, epsilon, dtype):
    x32 = x.astype(jnp.float32)
    mean, rstd = _statistics(x32, epsilon)
    out = ((x32 - mean) * rstd * scale + bias).astype(dtype)
    return out, (x, mean, rstd, scale)


def _layer_norm_backward(epsilon, dtype, residuals, d_out):
    del epsilon, dtype
    x, mean, rstd, scale = residuals
    x_hat = (x.astype(jnp.float32) - mean) * rstd
    d_out = d_out.astype(jnp.float32)
    d_out_x_hat = d_out * x_hat
    d_x = rstd * (d_out * scale - _row_mean(d_out, scale) - x_hat * _row_mean(d_out_x_hat, scale))
    return d_x.astype(x.dtype), _column_sum(d_out_x_hat), _column_sum(d_out)


layer_norm.defvjp(_layer_norm_forward, _layer_norm_backward)


class CpuLayerNorm(nn.Module):
    """nn.LayerNorm's parameters and results (two-pass variance) with `layer_norm`'s passes.

    `dtype` is the output dtype (None: the input's promoted with float32, as nn.LayerNorm).
    """

    epsilon: float = 1e-6
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones_init(), (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (features,), jnp.float32)
        dtype = self.dtype or jnp.promote_types(x.dtype, jnp.float32)
        return layer_norm(x, scale, bias, self.epsilon, dtype)
