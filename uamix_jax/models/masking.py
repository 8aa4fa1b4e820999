"""Random patch masking (AudioMAE's two schemes): MAE pretraining and fine-tuning's token drop.

A masking is described by index arrays rather than by a boolean mask, so the encoder can
gather the visible tokens (a fixed count per clip, hence static shapes under jit) and the
decoder can scatter them back. Token k of a (time, freq) patch grid is k = t * F + f.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Masking(NamedTuple):
    """Which patch tokens the encoder sees, per clip.

    ids_keep: (B, K) int32, token indices fed to the encoder, in the order it sees them.
    ids_restore: (B, N) int32, position in [visible tokens, mask tokens] of each token k,
      so gathering that concatenation with ids_restore puts it back in raster order.
    mask: (B, N) float32, 1 where the token is hidden (its reconstruction is scored).
    """

    ids_keep: jax.Array
    ids_restore: jax.Array
    mask: jax.Array


def _from_order(ids_shuffle: jax.Array, num_keep: int) -> Masking:
    """Builds a Masking from a per-clip token order whose first num_keep entries are kept."""
    ids_restore = jnp.argsort(ids_shuffle, axis=1).astype(jnp.int32)
    mask = (ids_restore >= num_keep).astype(jnp.float32)
    return Masking(ids_shuffle[:, :num_keep].astype(jnp.int32), ids_restore, mask)


def random_masking(rng: jax.Array, batch_size: int, num_patches: int, mask_ratio: float) -> Masking:
    """Unstructured masking: each clip hides a uniformly random subset of its tokens.

    Keeps int(num_patches * (1 - mask_ratio)) tokens, truncated as AudioMAE does
    (512 tokens at ratio 0.8 keep 102).
    """
    num_keep = int(num_patches * (1 - mask_ratio))
    if not 0 < num_keep < num_patches:
        raise ValueError(
            f"mask_ratio {mask_ratio} keeps {num_keep} of {num_patches} tokens; "
            "it must keep at least one and hide at least one"
        )
    noise = jax.random.uniform(rng, (batch_size, num_patches))
    return _from_order(jnp.argsort(noise, axis=1), num_keep)


def _random_rows_masked(rng: jax.Array, batch_size: int, size: int, num_keep: int) -> jax.Array:
    """(B, size) bool: a uniformly random subset of size - num_keep entries per clip is True."""
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(rng, (batch_size, size)), axis=1), axis=1)
    return rank >= num_keep


def random_masking_2d(
    rng: jax.Array,
    batch_size: int,
    grid_shape: tuple[int, int],
    mask_t_prob: float,
    mask_f_prob: float,
) -> Masking:
    """Time/frequency masking: whole time rows and whole frequency columns of the grid are hidden.

    int(T * (1 - mask_t_prob)) time rows and int(F * (1 - mask_f_prob)) frequency columns
    survive; a token is visible only where a surviving row meets a surviving column. The
    visible tokens are handed to the encoder in raster order, as in AudioMAE.
    """
    time_patches, freq_patches = grid_shape
    keep_t = int(time_patches * (1 - mask_t_prob))
    keep_f = int(freq_patches * (1 - mask_f_prob))
    if keep_t < 1 or keep_f < 1 or keep_t * keep_f == time_patches * freq_patches:
        raise ValueError(
            f"mask_t_prob {mask_t_prob} / mask_f_prob {mask_f_prob} keep {keep_t} of "
            f"{time_patches} time rows and {keep_f} of {freq_patches} frequency "
            "columns; at least one of each must survive and one token be hidden"
        )
    rng_t, rng_f = jax.random.split(rng)
    time_masked = _random_rows_masked(rng_t, batch_size, time_patches, keep_t)
    freq_masked = _random_rows_masked(rng_f, batch_size, freq_patches, keep_f)
    hidden = (time_masked[:, :, None] | freq_masked[:, None, :]).reshape(batch_size, -1)
    # A stable sort puts the visible tokens first, each group in raster order.
    ids_shuffle = jnp.argsort(hidden.astype(jnp.int32), axis=1, stable=True)
    return _from_order(ids_shuffle, keep_t * keep_f)


def gather_tokens(tokens: jax.Array, ids: jax.Array) -> jax.Array:
    """tokens (B, N, D), ids (B, K) -> (B, K, D), the selected tokens of each clip."""
    return jnp.take_along_axis(tokens, ids[:, :, None], axis=1)
