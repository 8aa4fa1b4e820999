"""The one training loop that tuning, MAE pretraining and fine-tuning share.

A job describes itself with a `Task` (its state, its loss, its stages); `train` owns the
rest, once for every job: rng streams, the non-finite-loss stop, checkpoints with the
data-iterator position, resumption, logging, stage changes and multi-host agreement.

Host synchronisation: the loop dispatches steps without waiting for the device. It reads
the device only on logging, evaluation and checkpoint steps; the state carries the first
step whose loss was not finite, so a NaN between two such steps is still caught (and
named) before anything is saved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from uamix_jax.data import sources
from uamix_jax.training import checkpoint, monitor, sharding

PyTree = Any
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
# Every step draws one key per stream, whether or not the job uses it, so adding a
# stochastic layer (dropout, drop path) never shifts another stream.
RNG_STREAMS = ("dropout", "drop_path", "masking", "augment", "mix", "neighbours")


@flax.struct.dataclass
class TrainState:
    """Everything a run carries from step to step; checkpointed whole, replicated.

    ``constants`` are arrays no optimiser sees (fixed positional embeddings); ``extras``
    is the job's own carried state (NNCLR: head batch statistics, EMA projector, queue).
    ``first_nonfinite`` is the step whose loss was first not finite, -1 while none was.
    """

    step: jax.Array
    params: PyTree
    constants: PyTree
    opt_state: optax.OptState
    rng: jax.Array
    extras: PyTree
    first_nonfinite: jax.Array


def create_state(
    params: PyTree,
    constants: PyTree,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    extras: PyTree | None = None,
) -> TrainState:
    """The state at step 0."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        constants=constants,
        opt_state=tx.init(params),
        rng=rng,
        extras={} if extras is None else extras,
        first_nonfinite=jnp.full((), -1, jnp.int32),
    )


# (params, state, batch, rngs) -> (loss, (metrics, aux)); aux goes to the job's `finish`.
LossFn = Callable[[PyTree, TrainState, Batch, dict], tuple[jax.Array, tuple[Metrics, Any]]]
FinishFn = Callable[[TrainState, Any, Batch], TrainState]
StepFn = Callable[[TrainState, Batch], tuple[TrainState, Metrics]]


def make_step(
    loss_fn: LossFn, tx: optax.GradientTransformation, finish: FinishFn | None = None
) -> StepFn:
    """The step skeleton ``(state, batch) -> (state, metrics)`` around a job's loss.

    Splits the state's key into `RNG_STREAMS`, differentiates ``loss_fn`` with respect to
    the params, applies ``tx``, records a non-finite loss, then lets ``finish`` update the
    job's extras from the loss's auxiliary output and the new params.
    """

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        rng, *keys = jax.random.split(state.rng, len(RNG_STREAMS) + 1)
        rngs = dict(zip(RNG_STREAMS, keys))
        (loss, (metrics, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state, batch, rngs
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        done = state.step + 1
        first_nonfinite = jnp.where(
            (state.first_nonfinite < 0) & ~jnp.isfinite(loss), done, state.first_nonfinite
        )
        new_state = state.replace(
            step=done,
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
            rng=rng,
            first_nonfinite=first_nonfinite,
        )
        if finish is not None:
            new_state = finish(new_state, aux, batch)
        return new_state, {"loss": loss, **metrics, "grad_norm": optax.global_norm(grads)}

    return step


def jit_step(step: StepFn, mesh: jax.sharding.Mesh) -> StepFn:
    """Compiles ``step`` for the mesh: state replicated and donated, batch on 'data'."""
    replicated = sharding.replicated(mesh)
    return jax.jit(
        step,
        in_shardings=(replicated, sharding.batch_sharded(mesh)),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )


@dataclasses.dataclass(frozen=True)
class Task:
    """What a job gives `train`.

    init_state(stage): the host state at step 0 with that stage's optimiser (the resume
      target: a checkpoint holds the optimiser state of the stage of its last step).
    compile_step(stage): the jitted step of a stage.
    stage_at(step): the stage in force for the step after ``step`` steps are done.
    enter_stage(state, stage): the state carried into a new stage (e.g. new optimiser
      masks with the moments carried over).
    describe_stage(state, stage): fields announced when a stage starts.
    evaluate(state): metrics of an evaluation, run after the steps where ``eval_due``.
    """

    total_steps: int
    global_batch: int
    batch_keys: tuple[str, ...]  # the fields of the pipeline's batches the step reads
    init_state: Callable[[int], TrainState]
    compile_step: Callable[[int], StepFn]
    learning_rate: optax.Schedule
    stage_at: Callable[[int], int] = lambda step: 0
    enter_stage: Callable[[TrainState, int], TrainState] | None = None
    describe_stage: Callable[[TrainState, int], Mapping[str, int]] | None = None
    eval_due: Callable[[int], bool] = lambda step: False
    evaluate: Callable[[TrainState], Mapping[str, float]] | None = None
    loss_name: str = "loss"
    advice: str = ""


def train(
    task: Task,
    config: ml_collections.ConfigDict,
    workdir: str,
    mesh: jax.sharding.Mesh,
    iterator: Iterator[dict],
) -> tuple[TrainState, dict[str, float]]:
    """Runs (or resumes) the task to ``task.total_steps``; returns the state and last record.

    ``config`` fields read: log_every, checkpoint (every_steps, max_to_keep, asynchronous).
    Resumes from the newest checkpoint in ``workdir/checkpoints``; a finished run returns
    at once with an empty record. Raises FloatingPointError naming the first step whose
    loss was not finite; the newest checkpoint is then the last finite one.
    """
    intervals = {
        "log_every": config.log_every,
        "checkpoint.every_steps": config.checkpoint.every_steps,
        "checkpoint.max_to_keep": config.checkpoint.max_to_keep,
    }
    for field, value in intervals.items():
        if value <= 0:
            raise ValueError(f"config.{field}={value} must be positive")
    manager = checkpoint.make_manager(workdir, config.checkpoint)
    step = manager.latest_step() or 0
    stage = task.stage_at(max(step - 1, 0))
    state = sharding.replicate(task.init_state(stage), mesh)
    if step:
        state = checkpoint.restore(manager, state, iterator)
        monitor.announce(f"resumed from {manager.directory} at step {step}")
    log = monitor.Monitor(workdir, task.total_steps, task.global_batch, step)
    step_fn, record = None, {}
    with _closing(manager, log):
        while step < task.total_steps:
            if task.stage_at(step) != stage:
                stage = task.stage_at(step)
                state, step_fn = sharding.replicate(task.enter_stage(state, stage), mesh), None
            if step_fn is None:
                step_fn = task.compile_step(stage)
                if task.describe_stage is not None:
                    log.stage(step, stage, task.describe_stage(state, stage))
            batch = next(iterator)
            batch = {key: batch[key] for key in task.batch_keys if key in batch}
            state, metrics = step_fn(state, sharding.global_batch(batch, mesh))
            step += 1
            last = step == task.total_steps
            log_now, eval_now = step % config.log_every == 0 or last, task.eval_due(step)
            save_now = last or manager.should_save(step)
            if not (log_now or eval_now or save_now):
                continue
            metrics, first_nonfinite = jax.device_get((metrics, state.first_nonfinite))
            if first_nonfinite >= 0:
                manager.wait_until_finished()
                raise FloatingPointError(
                    f"{task.loss_name} is not finite at step {first_nonfinite}; stopping. The "
                    f"last good checkpoint (step {manager.latest_step()}) in "
                    f"{manager.directory} is intact." + (f" {task.advice}" if task.advice else "")
                )
            record = {key: float(value) for key, value in metrics.items()}
            record["lr"] = float(task.learning_rate(step))
            if eval_now and task.evaluate is not None:
                record.update(task.evaluate(state))
            if log_now or eval_now:
                log.write(step, record)
            if save_now:
                checkpoint.save(manager, step, state, iterator, force=last)
    return state, record


@contextlib.contextmanager
def _closing(manager, log: monitor.Monitor):
    """Waits for pending asynchronous saves and closes the manager and log, even on error."""
    try:
        yield
    finally:
        manager.wait_until_finished()
        manager.close()
        log.close()


def resolve_paths(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
    """A copy of ``config`` whose empty ``data.data_dir`` means ``workdir/data``."""
    config = config.copy_and_resolve_references()
    if not config.data.data_dir:
        config.data.data_dir = os.path.join(workdir, "data")
    return config


def prepare_data(data_config: ml_collections.ConfigDict, split: str | None = None) -> int:
    """Builds the data set if missing (host 0 only); returns the clips of ``split``.

    ``split`` defaults to ``data_config.split``.
    """
    if jax.process_index() == 0:
        sources.prepare(data_config)
    sharding.sync_hosts("data prepared")
    split = data_config.split if split is None else split
    return len(sources.open_source(data_config, split)[0])


def steps_per_epoch(num_clips: int, global_batch: int, split: str) -> int:
    """Whole global batches in one pass over ``num_clips`` clips (at least one)."""
    steps = num_clips // global_batch
    if steps == 0:
        raise ValueError(
            f"config.data.batch_size={global_batch} exceeds the {num_clips} clips of split "
            f"{split!r}: not one step per epoch"
        )
    return steps


def on_host_0(name: str, write: Callable[[], Any]) -> None:
    """Runs ``write`` on process 0 only, then waits until every process gets here.

    For outputs written once (exported models, pictures, tables). ``write`` must not
    itself wait for other processes.
    """
    if jax.process_index() == 0:
        write()
    sharding.sync_hosts(name)
