"""Pre-norm ViT building blocks with AudioMAE's (timm 0.3.2's) numerics and parameter names."""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from uamix_jax.models.audiomae_config import ATTENTION_IMPLEMENTATIONS
from uamix_jax.models.chunked_attention import chunked_attention
from uamix_jax.models.dense import Dense
from uamix_jax.models.layer_norm import LayerNorm as _LayerNorm

# AudioMAE builds every LayerNorm with eps 1e-6 (models_vit.py, models_mae.py).
LayerNorm = functools.partial(_LayerNorm, epsilon=1e-6)


_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU as PyTorch's nn.GELU computes it, x/2 (1 + erf(x / sqrt 2)), in float32.

    One fused pass each way that keeps only x for the backward pass. Under bf16, autodiff of
    the formula rounded and stored every intermediate (five (B, N, 4D) passes forward); and
    jax.nn.gelu(approximate=False) uses erfc, which XLA:CPU expands into two series, an exp
    and two divisions (float32 fwd+bwd on (12, 513, 768): 4.4 against 2.5 ms for erf).
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


class DropPath(nn.Module):
    """Stochastic depth: zeroes a residual branch per sample, scaling survivors by 1/keep."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        survive = jax.random.bernoulli(self.make_rng("drop_path"), keep, shape)
        return jnp.where(survive, x / keep, jnp.zeros_like(x))


class PatchEmbed(nn.Module):
    """(B, T, F) spectrogram -> (B, T/p * F/p, D) tokens, token k = t * (F/p) + f.

    The spectrogram is an NHWC image with H = time, so the tokens come out in the same
    order as PyTorch's conv over (B, 1, T, F) flattened from (B, D, T/p, F/p).
    """

    embed_dim: int
    patch_size: int
    dtype: Any

    @nn.compact
    def __call__(self, fbank: jax.Array) -> jax.Array:
        p = self.patch_size
        proj = nn.Conv(
            self.embed_dim,
            (p, p),
            strides=(p, p),
            padding="VALID",
            dtype=self.dtype,
            kernel_init=nn.initializers.xavier_uniform(),
            name="proj",
        )
        x = proj(fbank[..., None].astype(self.dtype))
        batch, time_patches, freq_patches, dim = x.shape
        return x.reshape(batch, time_patches * freq_patches, dim)


def resolve_attention(implementation: str) -> str:
    """'auto' -> 'chunked' on the CPU backend, 'xla_sdpa' elsewhere; other names pass through.

    On XLA:CPU the chunked attention is more than twice as fast as dot_product_attention
    (ViT-B shape, forward+backward: 86 against 170 ms, README encoder section); on
    GPU/TPU dot_product_attention is XLA's (and cuDNN's) own path.
    """
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"attention={implementation!r}, expected one of {ATTENTION_IMPLEMENTATIONS}"
        )
    if implementation == "auto":
        return "chunked" if jax.default_backend() == "cpu" else "xla_sdpa"
    return implementation


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection laid out [q | k | v], head-major.

    Both implementations compute the plain softmax(QK^T / sqrt(d))V with the softmax in
    float32 even for bfloat16 inputs. 'xla_sdpa' is jax.nn.dot_product_attention with its
    default (XLA) implementation, also the single switch to cuDNN's fused kernel
    (implementation='cudnn') on GPUs, left off because no GPU run has checked it against the
    reference. 'chunked' transposes q, k, v once to (B, H, N, Dh) for
    `chunked_attention`: see `resolve_attention`.
    """

    num_heads: int
    dropout_rate: float
    dtype: Any
    implementation: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        batch, length, dim = x.shape
        qkv = Dense(3 * dim, dtype=self.dtype, name="qkv")(x)
        qkv = qkv.reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        if resolve_attention(self.implementation) == "chunked":
            # split, not indexing: the backward pass then assembles d_qkv with one
            # concatenation instead of adding three zero-padded copies (bf16 ViT-B step:
            # 17 ms per block for that add, single-threaded).
            q, k, v = (jnp.squeeze(x, 0) for x in jnp.split(jnp.transpose(qkv, (2, 0, 3, 1, 4)), 3))
            out = jnp.swapaxes(chunked_attention(q, k, v), 1, 2)
        else:
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
            out = jax.nn.dot_product_attention(q, k, v)
        out = Dense(dim, dtype=self.dtype, name="proj")(out.reshape(batch, length, dim))
        return nn.Dropout(self.dropout_rate)(out, deterministic=deterministic)


class Mlp(nn.Module):
    """fc1 -> exact (erf) GELU -> fc2, with timm's dropout after each."""

    hidden_dim: int
    dropout_rate: float
    dtype: Any

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        dim = x.shape[-1]
        x = gelu(Dense(self.hidden_dim, dtype=self.dtype, name="fc1")(x))
        x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
        x = Dense(dim, dtype=self.dtype, name="fc2")(x)
        return nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)


class Block(nn.Module):
    """x + drop_path(attn(norm1(x))), then x + drop_path(mlp(norm2(x)))."""

    num_heads: int
    mlp_ratio: float
    drop_path_rate: float
    dropout_rate: float
    dtype: Any
    attention: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        dim = x.shape[-1]
        drop_path = DropPath(self.drop_path_rate)
        attention = Attention(
            self.num_heads, self.dropout_rate, self.dtype, self.attention, name="attn"
        )
        branch = attention(LayerNorm(dtype=self.dtype, name="norm1")(x), deterministic)
        x = x + drop_path(branch, deterministic)
        branch = Mlp(int(dim * self.mlp_ratio), self.dropout_rate, self.dtype, name="mlp")(
            LayerNorm(dtype=self.dtype, name="norm2")(x), deterministic
        )
        return x + drop_path(branch, deterministic)
