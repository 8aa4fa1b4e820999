"""The MAE pretraining loss for `runner.make_step`: mask, encode the visible tokens, decode,
masked MSE."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from uamix_jax.models import mae, masking
from uamix_jax.pretraining import objective
from uamix_jax.training import runner

PyTree = Any
MASKINGS = ("random", "time_freq")


def sample_masking(
    config: ml_collections.ConfigDict, rng: jax.Array, batch_size: int, grid: tuple[int, int]
) -> masking.Masking:
    """The masking named by ``config.kind``: 'random' (mask_ratio) or 'time_freq'
    (mask_t_prob, mask_f_prob), AudioMAE's unstructured and 2-D schemes."""
    if config.kind == "random":
        return masking.random_masking(rng, batch_size, grid[0] * grid[1], config.mask_ratio)
    if config.kind == "time_freq":
        return masking.random_masking_2d(
            rng, batch_size, grid, config.mask_t_prob, config.mask_f_prob
        )
    raise ValueError(f"config.masking.kind={config.kind!r}; expected one of {MASKINGS}")


def init_variables(
    model: mae.MaskedAutoencoder, masking_config: ml_collections.ConfigDict, rng: jax.Array
) -> PyTree:
    """A freshly initialised MAE, {'params', 'constants'}, with AudioMAE's initialisers."""
    init_rng, mask_rng = jax.random.split(rng)
    enc = model.config.encoder
    fbank = jnp.zeros((1, enc.target_length, enc.num_mel_bins), jnp.float32)
    m = sample_masking(masking_config, mask_rng, 1, enc.grid)
    return model.init({"params": init_rng}, fbank, m.ids_keep, m.ids_restore)


def reconstruction_loss(
    model: mae.MaskedAutoencoder,
    variables: PyTree,
    fbank: jax.Array,
    mask: masking.Masking,
    norm_pix_loss: bool,
    train: bool = False,
    rngs: dict[str, jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """(masked MSE, predicted patches) of the MAE on one batch under a given masking."""
    pred = model.apply(variables, fbank, mask.ids_keep, mask.ids_restore, train=train, rngs=rngs)
    target = objective.reconstruction_targets(fbank, model.config.encoder.patch_size, norm_pix_loss)
    return objective.masked_mse(pred, target, mask.mask), pred


def make_loss(model: mae.MaskedAutoencoder, config: ml_collections.ConfigDict) -> runner.LossFn:
    """The MAE loss ``(params, state, batch, rngs) -> (loss, (metrics, aux))``;
    batch['fbank'] (B, T, F).

    Under jit on a globally sharded batch the masking, the loss and the gradient are those
    of the global batch. ``config`` is the run config (fields masking, norm_pix_loss).
    """
    grid = model.config.encoder.grid

    def loss_fn(params: PyTree, state: runner.TrainState, batch: dict, rngs: dict):
        fbank = batch["fbank"]
        mask = sample_masking(config.masking, rngs["masking"], fbank.shape[0], grid)
        loss, _ = reconstruction_loss(
            model,
            {"params": params, "constants": state.constants},
            fbank,
            mask,
            config.norm_pix_loss,
            train=True,
            rngs={"dropout": rngs["dropout"], "drop_path": rngs["drop_path"]},
        )
        return loss, ({}, None)

    return loss_fn
