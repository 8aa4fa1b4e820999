"""The ViT's linear layer, y = x W + b, with a hand-written backward pass for bfloat16.

Under bfloat16 compute, autodiff of `nn.Dense` leaves two things slow on a CPU (README,
benchmarks section):

- bfloat16 dots. XLA:CPU's fast bf16 dot (YNNPACK, AVX512-BF16) runs only when the dot
  returns float32: a 4096^3 matmul reached 682 GFLOP/s that way, 308 returning bf16. Here
  the forward dot and both backward dots accumulate and return float32 and are rounded to
  the compute dtype afterwards, where a bf16 dot would have rounded anyway.
- the bias gradient. Autodiff sums d_out over every row with a reduction that XLA:CPU
  splits into reduce-window passes (1.1 s of a 4.5 s bf16 ViT-B step); here it is a
  vector-matrix product with ones, which runs as a dot.

Together: ViT-B encoder forward+backward in bf16 6.5 -> 3.9 s. In float32 the same
backward pass was slower than autodiff's (6.6 against 6.1 s), so float32 keeps autodiff.
Parameters are nn.Dense's ('kernel' (in, out), 'bias' (out,), float32, same initialisation
order), so checkpoints and their conversion are unchanged.
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


class Dense(nn.Module):
    """Linear layer over the last axis: nn.Dense's parameters; `dense` below float32.

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
        if x.dtype == jnp.float32:
            return x @ kernel if bias is None else x @ kernel + bias
        return dense(x, kernel, bias)
