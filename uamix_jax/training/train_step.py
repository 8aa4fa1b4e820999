"""The uaMix-MAE tuning step's own parts, for `runner.make_step`: loss and carried state.

views -> encoder (top ``trainable_blocks`` differentiable) -> NNCLR head on the stacked
views -> neighbours from the queue -> L_clean + w_mix L_mix; after the update, the EMA
target projector follows the online one and the clean view's projections are enqueued.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from uamix_jax.data import augment
from uamix_jax.models import nnclr_head
from uamix_jax.training import mixing, nnclr, runner

PyTree = Any


def make_head(
    config: ml_collections.ConfigDict, dtype: str, kernels: str = "auto"
) -> nnclr_head.NNCLRHead:
    """The NNCLR head described by the method config (``config.method``), with the
    encoder's compute dtype and kernels."""
    return nnclr_head.NNCLRHead(
        proj_hidden_dim=config.proj_hidden_dim,
        output_dim=config.output_dim,
        pred_hidden_dim=config.pred_hidden_dim,
        dtype=jnp.dtype(dtype),
        kernels=kernels,
    )


def create_state(
    method: ml_collections.ConfigDict,
    encoder_variables: PyTree,
    head: nnclr_head.NNCLRHead,
    embed_dim: int,
    tx: optax.GradientTransformation,
    rng: jax.Array,
) -> runner.TrainState:
    """Step 0 around given encoder variables (pretrained or random).

    ``params`` = ``{'encoder', 'head': {'projector', 'predictor'}}``; ``extras`` holds
    the head's batch statistics, the EMA target projector (``{}`` when
    ``method.ema_decay`` is 0) and the queue.
    """
    head_rng, state_rng = jax.random.split(rng)
    head_variables = head.init(head_rng, jnp.zeros((2, embed_dim), jnp.float32), train=False)
    params = {"encoder": encoder_variables["params"], "head": head_variables["params"]}
    batch_stats = head_variables["batch_stats"]
    ema = {}
    if method.ema_decay:
        # Own buffers: the state is donated to the step, and a buffer may be donated only once.
        ema = jax.tree.map(
            jnp.copy,
            {"params": params["head"]["projector"], "batch_stats": batch_stats["projector"]},
        )
    extras = {
        "batch_stats": batch_stats,
        "ema": ema,
        "queue": nnclr.init_queue(method.queue_size, method.output_dim),
    }
    return runner.create_state(
        params, encoder_variables.get("constants", {}), tx, state_rng, extras
    )


def make_loss(
    encoder: Any,
    head: nnclr_head.NNCLRHead,
    method: ml_collections.ConfigDict,
    augment_config: ml_collections.ConfigDict,
    trainable_blocks: int,
) -> runner.LossFn:
    """The tuning loss ``(params, state, batch, rngs) -> (loss, (metrics, aux))``.

    ``batch``: 'fbank' (B, T, F) normalised, 'id' (B,) clip ids, optionally 'label'
    (B,) class indices (only used to monitor the queue's NN accuracy).
    """
    target_projector = nnclr_head.Projector(
        head.proj_hidden_dim, head.output_dim, head.dtype, head.kernels
    )
    patch_size = encoder.config.patch_size

    def targets(ema: PyTree, pooled: jax.Array, projections: jax.Array):
        """z (V, B, d) used for the queue and the lookups: online projections, or the EMA
        projector's, for the (V, B, D) pooled clean views."""
        if not ema:
            return jax.lax.stop_gradient(projections), ema
        z, updates = target_projector.apply(
            {"params": ema["params"], "batch_stats": ema["batch_stats"]},
            jax.lax.stop_gradient(pooled),
            train=True,
            mutable=["batch_stats"],
        )
        return z.astype(jnp.float32), {"params": ema["params"], **updates}

    def loss_fn(params: PyTree, state: runner.TrainState, batch: dict, rngs: dict):
        view1, view2 = augment.augment_views(batch["fbank"], rngs["augment"], augment_config)
        views, lam = [view1, view2], None
        if method.mix != "none":
            mixed, lam = mixing.mix(
                method.mix,
                view1,
                rngs["mix"],
                method.mix_alpha,
                method.mix_patch_aligned,
                patch_size,
                method.mix_per_sample,
            )
            views.append(mixed)
        # One encoder pass over all views (the encoder has no batch statistics).
        encoded = encoder.apply(
            {"params": params["encoder"], "constants": state.constants},
            jnp.concatenate(views),
            train=True,
            trainable_blocks=trainable_blocks,
            rngs={"dropout": rngs["dropout"], "drop_path": rngs["drop_path"]},
        )
        # (V, B, D): the head's BatchNorm keeps each view's statistics its own.
        pooled = encoded.pooled.reshape(len(views), -1, encoded.pooled.shape[-1])
        (projections, predictions), updates = head.apply(
            {"params": params["head"], "batch_stats": state.extras["batch_stats"]},
            pooled,
            train=True,
            mutable=["batch_stats"],
        )
        (z1, z2), ema = targets(state.extras["ema"], pooled[:2], projections[:2])
        nn1_rng, nn2_rng = jax.random.split(rngs["neighbours"])
        queue = state.extras["queue"]
        nn1, index1 = nnclr.nearest_neighbour(queue, z1, batch["id"], nn1_rng, method.topk)
        nn2, _ = nnclr.nearest_neighbour(queue, z2, batch["id"], nn2_rng, method.topk)
        p_mixed = predictions[2] if lam is not None else None
        loss, parts = nnclr.uamix_loss(
            nn1,
            nn2,
            predictions[0],
            predictions[1],
            p_mixed,
            lam,
            method.temperature,
            method.mix_weight,
        )
        metrics = dict(parts)
        labels = class_labels(batch)
        if labels is not None:
            metrics["nn_accuracy"] = nnclr.nn_accuracy(queue, index1, labels)
        aux = {"batch_stats": updates["batch_stats"], "ema": ema, "z1": z1}
        return loss, (metrics, aux)

    return loss_fn


def make_finish(method: ml_collections.ConfigDict) -> runner.FinishFn:
    """After the update: the head's new batch statistics, the EMA projector following the
    updated online projector, and the clean view's targets enqueued."""

    def finish(state: runner.TrainState, aux: dict, batch: dict) -> runner.TrainState:
        ema = aux["ema"]
        if ema:
            ema = {
                "params": nnclr.ema_update(
                    ema["params"], state.params["head"]["projector"], method.ema_decay
                ),
                "batch_stats": ema["batch_stats"],
            }
        queue = nnclr.enqueue(state.extras["queue"], aux["z1"], batch["id"], class_labels(batch))
        return state.replace(
            extras={"batch_stats": aux["batch_stats"], "ema": ema, "queue": queue}
        )

    return finish


def make_step(
    encoder: Any,
    head: nnclr_head.NNCLRHead,
    tx: optax.GradientTransformation,
    method: ml_collections.ConfigDict,
    augment_config: ml_collections.ConfigDict,
    trainable_blocks: int,
) -> runner.StepFn:
    """The (unjitted) tuning step of a stage: `runner.make_step` around `make_loss` and
    `make_finish`."""
    loss = make_loss(encoder, head, method, augment_config, trainable_blocks)
    return runner.make_step(loss, tx, make_finish(method))


def class_labels(batch: dict) -> jax.Array | None:
    """Single-label class indices of the batch, when it has them (for monitoring only)."""
    labels = batch.get("label")
    return labels if labels is not None and labels.ndim == 1 else None
