"""The AudioMAE encoder's public API: configuration, model, checkpoints, positional tables.

`preset('base')` or `AudioMAEConfig(...)` describes an encoder, `AudioMAEEncoder(config)`
is the Flax module, `save` / `load` / `read_config` move it to and from disk. The pieces
live in audiomae_config.py, audiomae_encoder.py, audiomae_checkpoint.py and pos_embed.py;
the checkpoint I/O depends on the model, never the reverse.
"""

from uamix_jax.models.audiomae_checkpoint import load, read_config, save
from uamix_jax.models.audiomae_config import AudioMAEConfig, preset
from uamix_jax.models.audiomae_encoder import AudioMAEEncoder, EncoderOutput
from uamix_jax.models.pos_embed import adapt_pos_embed, sincos_pos_embed

__all__ = [
    "AudioMAEConfig",
    "AudioMAEEncoder",
    "EncoderOutput",
    "adapt_pos_embed",
    "load",
    "preset",
    "read_config",
    "save",
    "sincos_pos_embed",
]
