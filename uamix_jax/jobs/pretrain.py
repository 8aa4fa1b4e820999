"""Mode 'pretrain': AudioMAE's masked-autoencoder pretraining, resumable from ``workdir``.

At the end it writes ``workdir/mae`` (``mae.save``; ``workdir/mae/encoder`` is an
``audiomae.save`` checkpoint the tuning job takes as ``init_checkpoint``) and
``workdir/reconstructions.png``.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from uamix_jax.data import pipeline
from uamix_jax.models import audiomae, mae
from uamix_jax.pretraining import train_step as pretrain_step
from uamix_jax.pretraining.visualize import save_reconstructions
from uamix_jax.training import optim, runner, sharding

MAE_DIR = "mae"
RECONSTRUCTIONS_FILE = "reconstructions.png"
# Everything but the decoder is handled by optim's encoder rules; the decoder trains whole.
DECODER_PATTERN = r"decoder/.*"


def model_config(config: ml_collections.ConfigDict) -> mae.MAEConfig:
    """The MAEConfig described by ``config.model``: an encoder preset with overrides, and
    the decoder's sizes."""
    model = config.model
    encoder = audiomae.preset(
        model.preset,
        target_length=config.data.target_length,
        dtype=model.dtype,
        drop_path_rate=model.drop_path_rate,
        kernels=model.kernels,
        **model.overrides.to_dict(),
    )
    return mae.MAEConfig(
        encoder=encoder,
        decoder_embed_dim=model.decoder_embed_dim,
        decoder_depth=model.decoder_depth,
        decoder_num_heads=model.decoder_num_heads,
        decoder_mode=model.decoder_mode,
    )


def starting_point(config: ml_collections.ConfigDict) -> tuple[mae.MaskedAutoencoder, Any]:
    """The MAE to pretrain: ``config.init_checkpoint`` (a ``mae.save`` directory, whose
    shape wins over ``config.model``) to continue pretraining, else a fresh one."""
    if config.init_checkpoint:
        model, variables = mae.load(config.init_checkpoint, kernels=config.model.kernels)
        stored = model.config.encoder.target_length
        if stored != config.data.target_length:
            raise ValueError(
                f"config.init_checkpoint={config.init_checkpoint!r} is an MAE for "
                f"{stored} frames; config.data.target_length is "
                f"{config.data.target_length}"
            )
        return model, variables
    model = mae.MaskedAutoencoder(model_config(config))
    init_rng = jax.random.split(jax.random.PRNGKey(config.seed))[0]
    return model, jax.device_get(
        jax.jit(lambda r: pretrain_step.init_variables(model, config.masking, r))(init_rng)
    )


def validate_config(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
    """Raises ValueError naming the first bad field of a pretraining config."""
    device_count = jax.device_count() if device_count is None else device_count
    batch = config.data.batch_size
    if batch <= 0 or batch % device_count or batch % jax.process_count():
        raise ValueError(
            f"config.data.batch_size={batch} (the global batch) must be a positive "
            f"multiple of the device count ({device_count}) and of the host count"
        )
    if config.masking.kind not in pretrain_step.MASKINGS:
        raise ValueError(
            f"config.masking.kind={config.masking.kind!r}; expected one of {pretrain_step.MASKINGS}"
        )
    if config.schedule.num_epochs <= 0:
        raise ValueError(
            f"config.schedule.num_epochs={config.schedule.num_epochs} must be positive"
        )


def _write_reconstructions(
    path: str,
    model: mae.MaskedAutoencoder,
    variables,
    config: ml_collections.ConfigDict,
    fbank: np.ndarray,
) -> None:
    """Masks a few clips with a fixed key, reconstructs them and draws the picture."""
    clips = fbank[: config.num_reconstructions]
    grid = model.config.encoder.grid
    mask = pretrain_step.sample_masking(
        config.masking, jax.random.PRNGKey(config.seed), clips.shape[0], grid
    )
    _, pred = pretrain_step.reconstruction_loss(
        model, variables, jnp.asarray(clips), mask, config.norm_pix_loss
    )
    save_reconstructions(
        path,
        clips,
        np.asarray(pred),
        np.asarray(mask.mask),
        model.config.encoder.patch_size,
        config.norm_pix_loss,
    )


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Pretrains (or resumes pretraining) an MAE and exports it to ``workdir/mae``.

    Returns ``{'step', 'loss', 'mae_dir', 'encoder_dir'}``; ``encoder_dir`` is the
    pretrained encoder as an ``audiomae.save`` checkpoint.
    """
    config = runner.resolve_paths(config, workdir)
    validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    batch = config.data.batch_size
    total_steps = config.schedule.num_epochs * runner.steps_per_epoch(
        runner.prepare_data(config.data), batch, config.data.split
    )
    mesh = sharding.make_mesh()
    model, variables = starting_point(config)
    state_rng = jax.random.split(jax.random.PRNGKey(config.seed))[1]
    # AdamW over encoder and decoder (pretraining has no layer decay: layer_decay=1).
    tx = optim.make_optimizer(
        config.optim,
        depth=model.config.encoder.depth,
        trainable_blocks=None,
        global_batch=batch,
        total_steps=total_steps,
        head_pattern=DECODER_PATTERN,
    )
    task = runner.Task(
        total_steps=total_steps,
        global_batch=batch,
        batch_keys=("fbank",),
        init_state=lambda stage: runner.create_state(
            variables["params"], variables["constants"], tx, state_rng
        ),
        compile_step=lambda stage: runner.jit_step(
            runner.make_step(pretrain_step.make_loss(model, config), tx), mesh
        ),
        learning_rate=optim.learning_rate_schedule(config.optim, batch, total_steps),
        loss_name="MAE loss",
        advice="Lower config.optim.base_lr or set config.optim.grad_clip.",
    )
    iterator = pipeline.make_iterator(
        config.data, train=True, seed=config.seed, shard=(jax.process_index(), jax.process_count())
    )
    state, record = runner.train(task, config, workdir, mesh, iterator)

    mae_dir = os.path.join(workdir, MAE_DIR)
    trained = jax.device_get({"params": state.params, "constants": state.constants})
    fbank = np.asarray(next(iterator)["fbank"])  # a batch no step used: the picture's clips

    def export():
        mae.save(mae_dir, model.config, trained, overwrite=True)
        _write_reconstructions(
            os.path.join(workdir, RECONSTRUCTIONS_FILE), model, trained, config, fbank
        )

    runner.on_host_0("MAE exported", export)
    return {
        "step": total_steps,
        "loss": record.get("loss"),
        "mae_dir": mae_dir,
        "encoder_dir": os.path.join(mae_dir, mae.ENCODER_DIR),
    }
