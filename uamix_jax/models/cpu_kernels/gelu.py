"""Exact (erf) GELU with a hand-written backward pass, computed in float32."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
    """x/2 (1 + erf(x / sqrt 2)), PyTorch's nn.GELU, evaluated in float32 and rounded once.

    One fused pass each way, keeping only x for the backward pass: under bfloat16, autodiff
    of the formula rounds and stores every intermediate. The formula uses erf rather than
    the erfc of jax.nn.gelu(approximate=False), which XLA:CPU expands into two series, an
    exp and two divisions. Measurements: benchmarks/NOTES.md#cpu-kernels-gelu.
    """
    return _gelu_forward(x)[0]


def _gelu_forward(x):
    x32 = x.astype(jnp.float32)
    return (0.5 * x32 * (1.0 + jax.lax.erf(x32 * _SQRT_HALF))).astype(x.dtype), x


def _gelu_backward(x, d_out):
    x32 = x.astype(jnp.float32)
    cdf = 0.5 * (1.0 + jax.lax.erf(x32 * _SQRT_HALF))
    pdf = jnp.exp(-0.5 * x32 * x32) * _INV_SQRT_2PI
    return ((d_out.astype(jnp.float32) * (cdf + x32 * pdf)).astype(x.dtype),)


gelu.defvjp(_gelu_forward, _gelu_backward)
