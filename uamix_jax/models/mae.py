"""AudioMAE's masked autoencoder: the encoder on visible tokens plus a light decoder.

Variables of `MaskedAutoencoder`:
  {'params': {'encoder': <AudioMAEEncoder params>, 'decoder': {decoder_embed, mask_token,
   decoder_blocks_{i}, decoder_norm, decoder_pred}},
   'constants': {'encoder': {'pos_embed'}, 'decoder': {'decoder_pos_embed'}}}
The decoder names mirror the keys of AudioMAE's models_mae.py (its global decoder,
decoder_mode 0, or its local one, decoder_mode 1), so the torch export of encoder + decoder
loads into AudioMAE's own model.
The 'encoder' subtrees are exactly an `AudioMAEEncoder`'s variables, so a pretrained
encoder feeds the tuning job unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from uamix_jax.models import audiomae, audiomae_checkpoint
from uamix_jax.models import kernels as K
from uamix_jax.models.local_attention import LocalBlock
from uamix_jax.models.masking import gather_tokens
from uamix_jax.models.pos_embed import sincos_pos_embed
from uamix_jax.models.vit_layers import Block

CONFIG_FILE = "mae_config.json"
DECODER_MODES = ("global", "local")
# AudioMAE's local decoder: 4 x 4 windows, every other block shifted by 2 time patches.
LOCAL_WINDOW, LOCAL_SHIFT = (4, 4), (2, 0)
ENCODER_DIR, DECODER_DIR = "encoder", "decoder"


@dataclasses.dataclass(frozen=True)
class MAEConfig:
    """Encoder architecture plus the decoder's sizes and kind.

    Defaults are models_mae.py's global decoder: 8 blocks, 512 wide, 16 heads.
    """

    encoder: audiomae.AudioMAEConfig
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    # 'global' attention over all tokens, or AudioMAE's 'local' shifted-window blocks
    # (its decoder_mode 1, used with 16 blocks for its reported models).
    decoder_mode: str = "global"

    def __post_init__(self) -> None:
        if self.decoder_mode not in DECODER_MODES:
            raise ValueError(f"decoder_mode={self.decoder_mode!r}, expected one of {DECODER_MODES}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {**dataclasses.asdict(self), "encoder": self.encoder.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MAEConfig":
        """Inverse of `to_dict`."""
        fields = dict(data)
        return cls(encoder=audiomae.AudioMAEConfig.from_dict(fields.pop("encoder")), **fields)


class MAEDecoder(nn.Module):
    """Reconstructs every patch from the encoded visible tokens (AudioMAE's forward_decoder)."""

    config: MAEConfig

    @nn.compact
    def __call__(
        self, visible_tokens: jax.Array, ids_restore: jax.Array, train: bool = False
    ) -> jax.Array:
        """visible_tokens (B, 1+K, D) with cls first; ids_restore (B, N) -> (B, N, p*p).

        train enables the local decoder's meta-MLP dropout (rng 'dropout').
        """
        cfg, enc = self.config, self.config.encoder
        dtype = jnp.dtype(enc.dtype)
        width = cfg.decoder_embed_dim
        mask_token = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, width))
        pos_embed = self.variable(
            "constants", "decoder_pos_embed", lambda: jnp.asarray(sincos_pos_embed(width, enc.grid))
        ).value

        x = K.dense(enc.kernels, width, dtype=dtype, name="decoder_embed")(visible_tokens)
        batch, num_visible = x.shape[0], x.shape[1] - 1
        fillers = jnp.broadcast_to(
            mask_token.astype(x.dtype), (batch, enc.num_patches - num_visible, width)
        )
        patches = gather_tokens(jnp.concatenate([x[:, 1:], fillers], axis=1), ids_restore)
        x = jnp.concatenate([x[:, :1], patches], axis=1) + pos_embed.astype(x.dtype)
        if cfg.decoder_mode == "local":
            x = x[:, 1:]  # windows tile the patch grid; AudioMAE drops the cls token here
        for i in range(cfg.decoder_depth):
            x = self._block(i)(x, not train)
        x = K.layer_norm(enc.kernels, dtype=dtype, name="decoder_norm")(x)
        pred = K.dense(enc.kernels, enc.patch_size**2, dtype=dtype, name="decoder_pred")(x)
        return (pred if cfg.decoder_mode == "local" else pred[:, 1:]).astype(jnp.float32)

    def _block(self, i: int) -> nn.Module:
        cfg, enc = self.config, self.config.encoder
        dtype, name = jnp.dtype(enc.dtype), f"decoder_blocks_{i}"
        if cfg.decoder_mode == "local":
            shift = (0, 0) if i % 2 == 0 else LOCAL_SHIFT
            return LocalBlock(
                cfg.decoder_num_heads,
                enc.grid,
                LOCAL_WINDOW,
                shift,
                enc.mlp_ratio,
                dtype,
                enc.kernels,
                name=name,
            )
        # AudioMAE's global decoder has no dropout or stochastic depth.
        return Block(
            cfg.decoder_num_heads,
            enc.mlp_ratio,
            0.0,
            0.0,
            dtype,
            enc.kernels,
            enc.attention_implementation,
            name=name,
        )


class MaskedAutoencoder(nn.Module):
    """Encoder on the visible tokens, decoder on all positions: predicted patches (B, N, p*p)."""

    config: MAEConfig

    def setup(self):
        self.encoder = audiomae.AudioMAEEncoder(self.config.encoder)
        self.decoder = MAEDecoder(self.config)

    def __call__(
        self, fbank: jax.Array, ids_keep: jax.Array, ids_restore: jax.Array, train: bool = False
    ) -> jax.Array:
        """fbank (B, T, F) normalised; ids_keep / ids_restore from `models.masking`."""
        encoded = self.encoder(fbank, train=train, ids_keep=ids_keep)
        return self.decoder(encoded.tokens, ids_restore, train=train)


def encoder_variables(variables: dict) -> dict:
    """The encoder's own variable tree, as `AudioMAEEncoder` and `audiomae.save` take it."""
    return {collection: tree["encoder"] for collection, tree in variables.items()}


def decoder_variables(variables: dict) -> dict:
    """The decoder's variable tree: {'params': ..., 'constants': {'decoder_pos_embed'}}."""
    return {collection: tree["decoder"] for collection, tree in variables.items()}


def save(
    directory: str | os.PathLike, config: MAEConfig, variables: dict, overwrite: bool = False
) -> None:
    """Writes `directory/encoder` (an `audiomae.save` checkpoint, usable on its own),
    `directory/decoder` (orbax) and `directory/mae_config.json`."""
    directory = os.path.abspath(os.fspath(directory))
    audiomae.save(
        os.path.join(directory, ENCODER_DIR),
        config.encoder,
        encoder_variables(variables),
        overwrite=overwrite,
    )
    decoder_path = os.path.join(directory, DECODER_DIR)
    with audiomae_checkpoint.local_checkpointer() as checkpointer:
        checkpointer.save(
            decoder_path, jax.tree.map(np.asarray, decoder_variables(variables)), force=overwrite
        )
    with open(os.path.join(directory, CONFIG_FILE), "w") as f:
        json.dump(config.to_dict(), f, indent=2)


def load(directory: str | os.PathLike, **encoder_overrides: Any) -> tuple[MaskedAutoencoder, dict]:
    """Reads a `save` directory back: (model, variables).

    encoder_overrides: AudioMAEConfig fields to change, execution ones (kernels, dtype, ...)
      included, as `audiomae.load` takes them.
    """
    directory = os.path.abspath(os.fspath(directory))
    config_path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"{config_path} not found: {directory} is not a MAE checkpoint written by mae.save"
        )
    with open(config_path) as f:
        config = MAEConfig.from_dict(json.load(f))
    _, encoder = audiomae.load(os.path.join(directory, ENCODER_DIR))
    with audiomae_checkpoint.local_checkpointer() as checkpointer:
        decoder = jax.tree.map(
            np.asarray, checkpointer.restore(os.path.join(directory, DECODER_DIR))
        )
    variables = {
        collection: {"encoder": encoder[collection], "decoder": decoder[collection]}
        for collection in ("params", "constants")
    }
    if encoder_overrides:
        config = dataclasses.replace(config, encoder=config.encoder.replace(**encoder_overrides))
    return MaskedAutoencoder(config), variables
