"""Layers written for XLA:CPU, where autodiff of the plain formulas is slow.

Each one computes what its stock counterpart computes (the same parameters, values and
gradients to float32 rounding; tests/test_kernels_equivalence.py), with custom backward
passes that avoid XLA:CPU's single-threaded reductions and keep its bfloat16 dots on the
fast path:

  CpuDense        nn.Dense
  CpuLayerNorm    nn.LayerNorm(use_fast_variance=False)
  gelu            jax.nn.gelu(approximate=False)
  qkv_attention   jax.nn.dot_product_attention over a fused qkv projection

Nothing here is imported by model code directly: `uamix_jax.models.kernels` picks these or
the stock layers from the model config's `kernels` field. The process-level CPU settings
(XLA flags, allocator) are in `uamix_jax.xla_setup`, which runs before JAX starts.
"""

from uamix_jax.models.cpu_kernels.chunked_attention import qkv_attention
from uamix_jax.models.cpu_kernels.dense import CpuDense
from uamix_jax.models.cpu_kernels.gelu import gelu
from uamix_jax.models.cpu_kernels.layer_norm import CpuLayerNorm

__all__ = ["CpuDense", "CpuLayerNorm", "gelu", "qkv_attention"]
