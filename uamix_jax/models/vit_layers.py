"""Pre-norm ViT building blocks with AudioMAE's (timm 0.3.2's) numerics and parameter names.

`kernels` ('stock', 'cpu' or 'auto') selects the layer implementations through
`uamix_jax.models.kernels`; the parameter tree is the same either way.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from uamix_jax.models import kernels as K


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
            # AudioMAE's xavier_uniform on the weight viewed as (D, p*p): fans p*p and D.
            kernel_init=nn.initializers.xavier_uniform(in_axis=(0, 1, 2), out_axis=-1),
            name="proj",
        )
        x = proj(fbank[..., None].astype(self.dtype))
        batch, time_patches, freq_patches, dim = x.shape
        return x.reshape(batch, time_patches * freq_patches, dim)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection laid out [q | k | v], head-major.

    softmax(QK^T / sqrt(d))V with the softmax in float32 even for bfloat16 inputs;
    `attention_implementation` ('xla' or 'cudnn') is read by the stock kernels only.
    """

    num_heads: int
    dropout_rate: float
    dtype: Any
    kernels: str = "auto"
    attention_implementation: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        batch, length, dim = x.shape
        qkv = K.dense(self.kernels, 3 * dim, dtype=self.dtype, name="qkv")(x)
        qkv = qkv.reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        out = K.qkv_attention(self.kernels, qkv, self.attention_implementation)
        out = K.dense(self.kernels, dim, dtype=self.dtype, name="proj")(
            out.reshape(batch, length, dim)
        )
        return nn.Dropout(self.dropout_rate)(out, deterministic=deterministic)


class Mlp(nn.Module):
    """fc1 -> exact (erf) GELU -> fc2, with timm's dropout after each."""

    hidden_dim: int
    dropout_rate: float
    dtype: Any
    kernels: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        dim = x.shape[-1]
        x = K.dense(self.kernels, self.hidden_dim, dtype=self.dtype, name="fc1")(x)
        x = nn.Dropout(self.dropout_rate)(K.gelu(self.kernels, x), deterministic=deterministic)
        x = K.dense(self.kernels, dim, dtype=self.dtype, name="fc2")(x)
        return nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)


class Block(nn.Module):
    """x + drop_path(attn(norm1(x))), then x + drop_path(mlp(norm2(x)))."""

    num_heads: int
    mlp_ratio: float
    drop_path_rate: float
    dropout_rate: float
    dtype: Any
    kernels: str = "auto"
    attention_implementation: str = "xla"

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        dim = x.shape[-1]
        drop_path = DropPath(self.drop_path_rate)
        attention = Attention(
            self.num_heads,
            self.dropout_rate,
            self.dtype,
            self.kernels,
            self.attention_implementation,
            name="attn",
        )
        norm1 = K.layer_norm(self.kernels, dtype=self.dtype, name="norm1")
        x = x + drop_path(attention(norm1(x), deterministic), deterministic)
        hidden = int(dim * self.mlp_ratio)
        mlp = Mlp(hidden, self.dropout_rate, self.dtype, self.kernels, name="mlp")
        norm2 = K.layer_norm(self.kernels, dtype=self.dtype, name="norm2")
        return x + drop_path(mlp(norm2(x), deterministic), deterministic)
