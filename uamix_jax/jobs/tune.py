"""Mode 'tune': uaMix-MAE tuning of an AudioMAE encoder, resumable from ``workdir``.

Run twice with the same arguments, the second call resumes from the newest checkpoint in
``workdir/checkpoints`` (or returns at once if the run finished). The tuned encoder is
written to ``workdir/encoder`` (an ``audiomae.save`` directory).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from uamix_jax.data import pipeline
from uamix_jax.models import audiomae
from uamix_jax.training import optim, runner, sharding, train_step, validation

ENCODER_DIR = "encoder"


@dataclasses.dataclass(frozen=True)
class Plan:
    """Step arithmetic of a run: epochs of ``steps_per_epoch`` steps, stages by epoch."""

    steps_per_epoch: int
    total_steps: int
    stages: tuple[tuple[int, int], ...]

    def stage_at(self, step: int) -> int:
        return optim.stage_at(self.stages, step // self.steps_per_epoch)

    def trainable_blocks(self, stage: int) -> int:
        return self.stages[stage][1]


def build_encoder(config: ml_collections.ConfigDict, rng: jax.Array) -> tuple[Any, dict]:
    """The encoder and its starting variables: ``config.init_checkpoint`` or a random init."""
    overrides = dict(
        dtype=config.model.dtype,
        drop_path_rate=config.model.drop_path_rate,
        kernels=config.model.kernels,
    )
    if config.init_checkpoint:
        validation.check_init_checkpoint(config.init_checkpoint)
        return audiomae.load(
            config.init_checkpoint, target_length=config.data.target_length, **overrides
        )
    model_config = audiomae.preset(
        config.model.preset,
        target_length=config.data.target_length,
        **overrides,
        **config.model.overrides.to_dict(),
    )
    encoder = audiomae.AudioMAEEncoder(model_config)
    dummy = np.zeros((1, model_config.target_length, model_config.num_mel_bins), np.float32)
    # Host copies: the train state's device buffers are donated, these stay valid.
    return encoder, jax.device_get(jax.jit(lambda r: encoder.init(r, dummy))(rng))


def encoder_depth(config: ml_collections.ConfigDict) -> int:
    """Depth of the encoder the config describes, without building it."""
    if config.init_checkpoint:
        validation.check_init_checkpoint(config.init_checkpoint)
        return audiomae.read_config(config.init_checkpoint).depth
    return audiomae.preset(config.model.preset, **config.model.overrides.to_dict()).depth


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Tunes (or resumes tuning) and saves the tuned encoder to ``workdir/encoder``.

    Returns ``{'step', 'loss', 'encoder_dir'}``.
    """
    config = runner.resolve_paths(config, workdir)
    depth = encoder_depth(config)
    validation.validate_tune_config(config, depth)
    validation.check_data(config.data)
    os.makedirs(workdir, exist_ok=True)
    batch = config.data.batch_size
    steps_per_epoch = runner.steps_per_epoch(
        runner.prepare_data(config.data), batch, config.data.split
    )
    plan = Plan(
        steps_per_epoch,
        steps_per_epoch * config.schedule.num_epochs,
        tuple(tuple(stage) for stage in config.schedule.stages),
    )
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    encoder, encoder_variables = build_encoder(config, init_rng)
    head = train_step.make_head(config.method, encoder.config.dtype, encoder.config.kernels)
    mesh = sharding.make_mesh()

    def optimizer(stage: int):
        # Only what is trainable in the stage carries optimiser state.
        return optim.make_optimizer(
            config.optim,
            depth=depth,
            trainable_blocks=plan.trainable_blocks(stage),
            global_batch=batch,
            total_steps=plan.total_steps,
        )

    def init_state(stage: int) -> runner.TrainState:
        return train_step.create_state(
            config.method,
            encoder_variables,
            head,
            encoder.config.embed_dim,
            optimizer(stage),
            state_rng,
        )

    def compile_step(stage: int) -> runner.StepFn:
        step = train_step.make_step(
            encoder,
            head,
            optimizer(stage),
            config.method,
            config.data.augment,
            plan.trainable_blocks(stage),
        )
        return runner.jit_step(step, mesh)

    def enter_stage(state: runner.TrainState, stage: int) -> runner.TrainState:
        # New masks; the moments of leaves that were already trainable carry over.
        fresh = optimizer(stage).init(state.params)
        return state.replace(opt_state=optim.carry_over_state(state.opt_state, fresh))

    def describe_stage(state: runner.TrainState, stage: int) -> dict[str, int]:
        blocks = plan.trainable_blocks(stage)
        return {
            "trainable_blocks": blocks,
            "trainable_params": optim.count_trainable(state.params, depth, blocks),
        }

    task = runner.Task(
        total_steps=plan.total_steps,
        global_batch=batch,
        batch_keys=("fbank", "id", "label"),
        init_state=init_state,
        compile_step=compile_step,
        learning_rate=optim.learning_rate_schedule(config.optim, batch, plan.total_steps),
        stage_at=plan.stage_at,
        enter_stage=enter_stage,
        describe_stage=describe_stage,
    )
    iterator = pipeline.make_iterator(
        config.data, train=True, seed=config.seed, shard=(jax.process_index(), jax.process_count())
    )
    state, record = runner.train(task, config, workdir, mesh, iterator)

    encoder_dir = os.path.join(workdir, ENCODER_DIR)
    tuned = jax.device_get({"params": state.params["encoder"], "constants": state.constants})
    # Compute dtype is a choice of this run, not of the weights: saved as float32.
    runner.on_host_0(
        "tuned encoder saved",
        lambda: audiomae.save(
            encoder_dir, encoder.config.replace(dtype="float32"), tuned, overwrite=True
        ),
    )
    return {"step": plan.total_steps, "loss": record.get("loss"), "encoder_dir": encoder_dir}
