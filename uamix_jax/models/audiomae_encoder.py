"""The AudioMAE ViT encoder (Huang et al., NeurIPS 2022) as a Flax linen module.

Parameter names mirror the PyTorch keys (`blocks_3/attn/qkv` is `blocks.3.attn.qkv`); the
fixed positional embedding lives in the 'constants' collection so no optimizer ever sees
it. Import it through `uamix_jax.models.audiomae`, which also holds the checkpoint I/O.
"""

from __future__ import annotations

from typing import Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from uamix_jax.models import kernels as K
from uamix_jax.models.audiomae_config import AudioMAEConfig
from uamix_jax.models.masking import gather_tokens, random_masking_2d
from uamix_jax.models.pos_embed import sincos_pos_embed
from uamix_jax.models.vit_layers import Block, PatchEmbed


@flax.struct.dataclass
class EncoderOutput:
    """tokens (B, 1+N, D), cls first; pooled (B, D) mean of patch tokens; logits (B, C) or None."""

    tokens: jax.Array
    pooled: jax.Array
    logits: Optional[jax.Array]


class AudioMAEEncoder(nn.Module):
    """AudioMAE ViT over a normalised (B, T, num_mel_bins) fbank with T = config.target_length."""

    config: AudioMAEConfig

    def _trunk_input(
        self,
        fbank: jax.Array,
        train: bool,
        mask_t_prob: float,
        mask_f_prob: float,
        ids_keep: Optional[jax.Array],
    ) -> jax.Array:
        """Patch tokens plus positional embedding, optionally masked, with the cls token first."""
        cfg = self.config
        dtype = jnp.dtype(cfg.dtype)
        expected = (cfg.target_length, cfg.num_mel_bins)
        if fbank.ndim != 3 or fbank.shape[1:] != expected:
            raise ValueError(
                f"fbank has shape {fbank.shape}; this encoder expects (B, {expected[0]}, "
                f"{expected[1]}) (config.target_length x config.num_mel_bins). Load "
                "the checkpoint with audiomae.load(path, target_length=T) for another T."
            )
        pos_embed = self.variable(
            "constants", "pos_embed", lambda: jnp.asarray(sincos_pos_embed(cfg.embed_dim, cfg.grid))
        ).value
        cls_token = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, cfg.embed_dim))
        x = PatchEmbed(cfg.embed_dim, cfg.patch_size, dtype, name="patch_embed")(fbank)
        x = x + pos_embed[:, 1:].astype(dtype)
        if ids_keep is not None:
            # MAE pretraining: the caller's masking chose the visible tokens.
            x = gather_tokens(x, ids_keep)
        elif train and (mask_t_prob > 0.0 or mask_f_prob > 0.0):
            # AudioMAE's fine-tuning token masking: whole time rows and frequency columns go.
            masking = random_masking_2d(
                self.make_rng("masking"), x.shape[0], cfg.grid, mask_t_prob, mask_f_prob
            )
            x = gather_tokens(x, masking.ids_keep)
        cls = jnp.broadcast_to(
            (cls_token + pos_embed[:, :1]).astype(dtype), (x.shape[0], 1, x.shape[2])
        )
        x = jnp.concatenate([cls, x], axis=1)
        return nn.Dropout(cfg.dropout_rate)(x, deterministic=not train)

    @nn.compact
    def __call__(
        self,
        fbank: jax.Array,
        train: bool = False,
        trainable_blocks: Optional[int] = None,
        mask_t_prob: float = 0.0,
        mask_f_prob: float = 0.0,
        ids_keep: Optional[jax.Array] = None,
    ) -> EncoderOutput:
        """Encodes a batch.

        Args:
          fbank: (B, T, F) float32, normalised as AudioMAE does.
          train: enables dropout, stochastic depth (rngs 'dropout', 'drop_path') and the
            token masking below (rng 'masking').
          trainable_blocks: static int k; the patch embedding and blocks [0, depth - k) run
            under stop_gradient, so no backward pass goes through the frozen trunk.
            None trains everything.
          mask_t_prob, mask_f_prob: static fractions of time rows / frequency columns of the
            patch grid dropped in training (AudioMAE fine-tuning uses 0.2 / 0.2).
          ids_keep: (B, K) int indices of the only patch tokens to encode, in that order
            (MAE pretraining, see `uamix_jax.models.masking`); overrides the above.
        """
        cfg = self.config
        if trainable_blocks is not None and not 0 <= trainable_blocks <= cfg.depth:
            raise ValueError(
                f"trainable_blocks={trainable_blocks} must lie in [0, depth={cfg.depth}]"
            )
        frozen = 0 if trainable_blocks is None else cfg.depth - trainable_blocks
        dtype = jnp.dtype(cfg.dtype)
        block_cls = nn.remat(Block, static_argnums=(2,)) if cfg.remat else Block
        # Per-block stochastic depth rises linearly to drop_path_rate, as in timm/AudioMAE.
        rates = np.linspace(0.0, cfg.drop_path_rate, cfg.depth).tolist()

        x = self._trunk_input(fbank, train, mask_t_prob, mask_f_prob, ids_keep)
        if frozen == 0 and trainable_blocks is not None:
            x = jax.lax.stop_gradient(x)
        for i in range(cfg.depth):
            block = block_cls(
                cfg.num_heads,
                cfg.mlp_ratio,
                rates[i],
                cfg.dropout_rate,
                dtype,
                cfg.kernels,
                cfg.attention_implementation,
                name=f"blocks_{i}",
            )
            x = block(x, not train)
            if i == frozen - 1:
                x = jax.lax.stop_gradient(x)

        if cfg.final_norm == "norm":
            x = K.layer_norm(cfg.kernels, dtype=dtype, name="norm")(x)
            pooled = x[:, 1:].mean(axis=1)
        else:
            norm = K.layer_norm(cfg.kernels, dtype=dtype, name="fc_norm")
            pooled = norm(x[:, 1:].mean(axis=1))
        logits = None
        if cfg.num_classes:
            # AudioMAE re-initialises the head with std 2e-5 before fine-tuning.
            head = nn.Dense(
                cfg.num_classes,
                dtype=dtype,
                name="head",
                kernel_init=nn.initializers.truncated_normal(2e-5),
            )
            logits = head(pooled).astype(jnp.float32)
        return EncoderOutput(x.astype(jnp.float32), pooled.astype(jnp.float32), logits)
