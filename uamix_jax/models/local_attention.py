"""AudioMAE's local decoder block: Swin-v2 style attention in shifted windows of the patch grid.

As in AudioMAE's timm_patch/swin_transformer.py (its `decoder_mode=1`): tokens laid out on
the (time, freq) grid attend within 4 x 4 windows, every other block shifted by 2 along
time; attention is cosine similarity divided by a learned per-head temperature `tau`, plus
a bias that a small MLP (`meta_mlp`) computes from log-spaced relative coordinates; the
block is post-norm: x + norm1(attn(x)), then x + norm2(mlp(x)).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from uamix_jax.models import kernels as K
from uamix_jax.models.vit_layers import Mlp

# AudioMAE's meta network: 2 -> 384 -> heads, ReLU, dropout 0.1 after each layer.
META_HIDDEN_DIM, META_DROPOUT = 384, 0.1
# Added to scores between tokens that the cyclic shift brought from different regions.
SHIFT_MASK_VALUE = -100.0


def fit_window(
    grid: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """A window no larger than the grid, and no shift along an axis the window covers whole."""
    fitted = tuple(min(g, w) for g, w in zip(grid, window))
    return fitted, tuple(0 if g <= w else s for g, w, s in zip(grid, fitted, shift))


def partition(x: jax.Array, window: tuple[int, int]) -> jax.Array:
    """(B, H, W, C) -> (B * windows, wh * ww, C), windows in row-major order per clip.

    Works on NumPy arrays too (the shift mask is built with it).
    """
    b, h, w, c = x.shape
    wh, ww = window
    x = x.reshape(b, h // wh, wh, w // ww, ww, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def merge(windows: jax.Array, window: tuple[int, int], grid: tuple[int, int]) -> jax.Array:
    """Inverse of `partition`: (B * windows, wh * ww, C) -> (B, H, W, C)."""
    (h, w), (wh, ww) = grid, window
    c = windows.shape[-1]
    x = windows.reshape(-1, h // wh, w // ww, wh, ww, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def relative_coordinates_log(window: tuple[int, int]) -> np.ndarray:
    """(area * area, 2): sign(d) * log(1 + |d|) of every (query, key) offset in a window."""
    coords = np.stack(np.meshgrid(np.arange(window[0]), np.arange(window[1]), indexing="ij"))
    coords = coords.reshape(2, -1)
    relative = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0).reshape(-1, 2)
    return (np.sign(relative) * np.log1p(np.abs(relative))).astype(np.float32)


def shift_mask(
    grid: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]
) -> np.ndarray | None:
    """(windows, area, area) additive mask keeping attention inside each pre-shift region."""
    if not any(shift):
        return None
    regions = np.zeros(grid, np.float32)
    label = 0
    # AudioMAE's three slices per axis; with no shift on an axis the last covers it whole.
    for rows in (slice(0, -window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
        for cols in (slice(0, -window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None)):
            regions[rows, cols] = label
            label += 1
    labels = partition(regions[None, :, :, None], window)[..., 0]  # NumPy: a constant
    return np.where(labels[:, None, :] != labels[:, :, None], SHIFT_MASK_VALUE, 0.0).astype(
        np.float32
    )


class WindowAttention(nn.Module):
    """Scaled cosine attention inside windows, with the meta-MLP relative position bias."""

    num_heads: int
    window: tuple[int, int]
    dtype: Any
    kernels: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, mask: np.ndarray | None, deterministic: bool) -> jax.Array:
        """x (B * windows, area, C); mask (windows, area, area) or None."""
        bw, area, dim = x.shape
        heads = self.num_heads
        qkv = K.dense(self.kernels, 3 * dim, dtype=self.dtype, name="qkv")(x)
        qkv = qkv.reshape(bw, area, 3, heads, dim // heads).astype(jnp.float32)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        tau = self.param("tau", nn.initializers.ones, (heads,))

        scores = jnp.einsum("blhd,bmhd->bhlm", q, k)
        norms = jnp.einsum(
            "blh,bmh->bhlm", jnp.linalg.norm(q, axis=-1), jnp.linalg.norm(k, axis=-1)
        )
        scores = scores / jnp.maximum(norms, 1e-6) / jnp.maximum(tau, 0.01)[None, :, None, None]
        scores = scores + self._position_bias(deterministic)[None]
        if mask is not None:
            windows = mask.shape[0]
            scores = scores.reshape(bw // windows, windows, heads, area, area)
            scores = (scores + jnp.asarray(mask)[None, :, None]).reshape(bw, heads, area, area)
        out = jnp.einsum("bhlm,bmhd->blhd", jax.nn.softmax(scores, axis=-1), v)
        out = out.reshape(bw, area, dim).astype(self.dtype)
        return K.dense(self.kernels, dim, dtype=self.dtype, name="proj")(out)

    def _position_bias(self, deterministic: bool) -> jax.Array:
        """(heads, area, area) from the meta MLP over log-spaced relative coordinates."""
        area = self.window[0] * self.window[1]
        bias = MetaMlp(self.num_heads, self.kernels, name="meta_mlp")(
            jnp.asarray(relative_coordinates_log(self.window)), deterministic
        )
        return bias.T.reshape(self.num_heads, area, area)


class MetaMlp(nn.Module):
    """fc1 -> ReLU -> dropout -> fc2 -> dropout (timm's Mlp with act ReLU, drop 0.1)."""

    out_features: int
    kernels: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        x = nn.relu(K.dense(self.kernels, META_HIDDEN_DIM, name="fc1")(x))
        x = nn.Dropout(META_DROPOUT)(x, deterministic=deterministic)
        x = K.dense(self.kernels, self.out_features, name="fc2")(x)
        return nn.Dropout(META_DROPOUT)(x, deterministic=deterministic)


class LocalBlock(nn.Module):
    """One post-norm block of (shifted-)window attention over a (time, freq) token grid."""

    num_heads: int
    grid: tuple[int, int]
    window: tuple[int, int]
    shift: tuple[int, int]
    mlp_ratio: float
    dtype: Any
    kernels: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        """x (B, T*F, C), tokens in raster order (no cls token)."""
        window, shift = fit_window(self.grid, self.window, self.shift)
        b, length, dim = x.shape
        y = x.reshape(b, *self.grid, dim)
        if any(shift):
            y = jnp.roll(y, (-shift[0], -shift[1]), axis=(1, 2))
        attention = WindowAttention(self.num_heads, window, self.dtype, self.kernels, name="attn")
        attended = attention(
            partition(y, window), shift_mask(self.grid, window, shift), deterministic
        )
        y = merge(attended, window, self.grid)
        if any(shift):
            y = jnp.roll(y, shift, axis=(1, 2))
        norm1 = K.layer_norm(self.kernels, dtype=self.dtype, name="norm1")
        x = x + norm1(y.reshape(b, length, dim))
        mlp = Mlp(int(dim * self.mlp_ratio), 0.0, self.dtype, self.kernels, name="mlp")
        norm2 = K.layer_norm(self.kernels, dtype=self.dtype, name="norm2")
        return x + norm2(mlp(x, deterministic))
