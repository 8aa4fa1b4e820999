"""The one switch between the stock Flax/JAX layers and the XLA:CPU kernels.

`kernels` is 'stock' (nn.Dense, nn.LayerNorm, jax.nn.gelu, jax.nn.dot_product_attention:
what runs on GPUs and TPUs), 'cpu' (`uamix_jax.models.cpu_kernels`) or 'auto', which
`resolve_kernels` turns into 'cpu' on the CPU backend and 'stock' elsewhere. The model
layers build their linear layers, norms, activation and attention through the functions
below, so both sets give the same parameter tree and checkpoints move freely between them.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax

from uamix_jax.models import cpu_kernels

KERNELS = ("auto", "stock", "cpu")
# jax.nn.dot_product_attention's `implementation`, read by the stock kernels only: 'cudnn'
# is cuDNN's fused attention (GPU, bfloat16 or float16).
ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn")
# Every linear layer of the ViT: timm's initialisation.
XAVIER_UNIFORM = nn.initializers.xavier_uniform()
# AudioMAE builds every LayerNorm with eps 1e-6 (models_vit.py, models_mae.py).
LAYER_NORM_EPSILON = 1e-6


def resolve_kernels(kernels: str) -> str:
    """'auto' -> 'cpu' on the CPU backend, 'stock' elsewhere; 'stock' and 'cpu' unchanged.

    The only place in the package that asks which backend JAX runs on.
    """
    if kernels not in KERNELS:
        raise ValueError(f"kernels={kernels!r}, expected one of {KERNELS}")
    if kernels == "auto":
        return "cpu" if jax.default_backend() == "cpu" else "stock"
    return kernels


def dense(
    kernels: str,
    features: int,
    *,
    name: str,
    dtype: Any = None,
    use_bias: bool = True,
    kernel_init: Callable = XAVIER_UNIFORM,
) -> nn.Module:
    """nn.Dense or CpuDense; `dtype` is the compute dtype, parameters are float32."""
    cls = cpu_kernels.CpuDense if resolve_kernels(kernels) == "cpu" else nn.Dense
    return cls(features, dtype=dtype, use_bias=use_bias, kernel_init=kernel_init, name=name)


def layer_norm(kernels: str, *, name: str, dtype: Any = None) -> nn.Module:
    """LayerNorm, AudioMAE's epsilon, PyTorch's two-pass variance; `dtype` is the output's."""
    if resolve_kernels(kernels) == "cpu":
        return cpu_kernels.CpuLayerNorm(LAYER_NORM_EPSILON, dtype=dtype, name=name)
    return nn.LayerNorm(LAYER_NORM_EPSILON, dtype=dtype, use_fast_variance=False, name=name)


def gelu(kernels: str, x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, as PyTorch's nn.GELU."""
    if resolve_kernels(kernels) == "cpu":
        return cpu_kernels.gelu(x)
    return nn.gelu(x, approximate=False)


def qkv_attention(kernels: str, qkv: jax.Array, implementation: str = "xla") -> jax.Array:
    """softmax(QK^T / sqrt(Dh)) V, the softmax in float32, over a fused projection.

    qkv: (B, N, 3, H, Dh), laid out [q | k | v]; returns (B, N, H, Dh). `implementation`
    ('xla' or 'cudnn') is passed to jax.nn.dot_product_attention by the stock kernels.
    """
    if resolve_kernels(kernels) == "cpu":
        return cpu_kernels.qkv_attention(qkv)
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"attention_implementation={implementation!r}, expected one of "
            f"{ATTENTION_IMPLEMENTATIONS}"
        )
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    return jax.nn.dot_product_attention(q, k, v, implementation=implementation)
