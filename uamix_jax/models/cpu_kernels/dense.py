"""`CpuDense`: y = x W + b with hand-written backward passes that suit XLA:CPU.

Autodiff of `x @ kernel + bias` leaves two things slow on XLA:CPU:

- the bias gradient. Autodiff sums d_out over every row, a reduction that XLA:CPU runs as
  single-threaded reduce-window passes.
- bfloat16 dots. XLA:CPU's fast bf16 dot (YNNPACK with AVX512-BF16) is used only when the
  dot returns float32.

float32 with a bias (`dense_ones_column`): the forward pass is the plain x @ kernel + bias,
which XLA fuses into the output's consumer (GELU, the residual add); frozen blocks only run
this. The backward pass multiplies [x, 1]^T by d_out, so the weight-gradient product yields
the bias gradient as its last row and no separate pass over d_out is needed. XLA:CPU runs a
product over rows by first copying one operand transposed, the first one written, so the
narrower of [x, 1] and d_out is written first.

bfloat16 (`dense`): the forward dot and both backward dots accumulate and return float32
and are rounded to the compute dtype afterwards, where a bf16 dot would have rounded
anyway; the bias gradient is a vector-matrix product with ones.

Parameters are nn.Dense's ('kernel' (in, out), 'bias' (out,), float32, same initialisation
order), so the two kernel sets share checkpoints. Measurements and the forms tried:
benchmarks/NOTES.md#cpu-kernels-dense.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype


def _dot(spec: str, a: jax.Array, b: jax.Array, dtype) -> jax.Array:
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32).astype(dtype)


@jax.custom_vjp
def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None) -> jax.Array:
    """x (..., K) @ kernel (K, N) [+ bias (N,)], accumulated in float32, in x.dtype."""
    out = jnp.einsum("...k,kn->...n", x, kernel, preferred_element_type=jnp.float32)
    if bias is not None:
        out = out + bias.astype(jnp.float32)
    return out.astype(x.dtype)


def _dense_forward(x, kernel, bias):
    return dense(x, kernel, bias), (x, kernel, bias)


def _dense_backward(residuals, d_out):
    x, kernel, bias = residuals
    d_bias = None
    if bias is not None:
        ones = jnp.ones(d_out.shape[:-1], d_out.dtype)
        d_bias = _dot("...,...n->n", ones, d_out, bias.dtype)
    return (
        _dot("...n,kn->...k", d_out, kernel, x.dtype),
        _dot("...k,...n->kn", x, d_out, kernel.dtype),
        d_bias,
    )


dense.defvjp(_dense_forward, _dense_backward)


def with_ones_column(x: jax.Array) -> jax.Array:
    """x (..., K) -> [x, 1] (..., K + 1): a product with it also sums the other operand."""
    return jnp.concatenate([x, jnp.ones((*x.shape[:-1], 1), x.dtype)], axis=-1)


@jax.custom_vjp
def dense_ones_column(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """x (..., K) @ kernel (K, N) + bias (N,); the backward pass multiplies by [x, 1]."""
    return _dense_ones_column_forward(x, kernel, bias)[0]


def _dense_ones_column_forward(x, kernel, bias):
    return x @ kernel + bias, (x, kernel)


def _dense_ones_column_backward(residuals, d_out):
    x, kernel = residuals
    x_ones = with_ones_column(x)
    # The operand XLA:CPU copies transposed is the first one: make it the narrower.
    if x_ones.shape[-1] > d_out.shape[-1]:
        d_kernel_bias = jnp.einsum("...n,...k->nk", d_out, x_ones).T
    else:
        d_kernel_bias = jnp.einsum("...k,...n->kn", x_ones, d_out)
    return d_out @ kernel.T, d_kernel_bias[:-1], d_kernel_bias[-1]


dense_ones_column.defvjp(_dense_ones_column_forward, _dense_ones_column_backward)


class CpuDense(nn.Module):
    """Linear layer over the last axis with nn.Dense's parameters (module docstring).

    `dtype` is the compute dtype (None: that of the inputs and float32 parameters).
    """

    features: int
    dtype: Any = None
    use_bias: bool = True
    kernel_init: Any = nn.initializers.xavier_uniform()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
        bias = None
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        if x.dtype != jnp.float32:
            return dense(x, kernel, bias)
        if bias is None:
            return x @ kernel
        return dense_ones_column(x, kernel, bias)
