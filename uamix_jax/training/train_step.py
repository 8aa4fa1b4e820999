"""One uaMix-MAE tuning step, compiled once per progressive stage.

views -> encoder (top ``trainable_blocks`` differentiable) -> NNCLR head on the stacked views
-> neighbours from the queue -> L_clean + w_mix L_mix -> AdamW on the trainable
leaves -> EMA target projector -> enqueue.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from uamix_jax.data import augment
from uamix_jax.models import nnclr_head
from uamix_jax.training import mixing, nnclr, sharding
from uamix_jax.training.train_state import TrainState

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
StepFn = Callable[[TrainState, Batch], tuple[TrainState, Metrics]]


def make_train_step(
    encoder: Any,
    head: nnclr_head.NNCLRHead,
    tx: optax.GradientTransformation,
    method: ml_collections.ConfigDict,
    augment_config: ml_collections.ConfigDict,
    trainable_blocks: int,
) -> StepFn:
    """The pure step function ``(state, batch) -> (state, metrics)``.

    ``batch``: 'fbank' (B, T, F) normalised, 'id' (B,) clip ids, optionally 'label'
    (B,) class indices (only used to monitor the queue's NN accuracy).
    """
    target_projector = nnclr_head.Projector(head.proj_hidden_dim, head.output_dim, head.dtype)
    patch_size = encoder.config.patch_size

    def targets(state: TrainState, pooled: jax.Array, projections: jax.Array):
        """z (V, B, d) used for the queue and the lookups: online projections, or the EMA
        projector's, for the (V, B, D) pooled clean views."""
        if not state.ema:
            return jax.lax.stop_gradient(projections), state.ema
        z, updates = target_projector.apply(
            {"params": state.ema["params"], "batch_stats": state.ema["batch_stats"]},
            jax.lax.stop_gradient(pooled),
            train=True,
            mutable=["batch_stats"],
        )
        ema = {"params": state.ema["params"], "batch_stats": updates["batch_stats"]}
        return z.astype(jnp.float32), ema

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        rng, step_rng = jax.random.split(state.rng)
        aug_rng, mix_rng, nn1_rng, nn2_rng, dropout_rng = jax.random.split(step_rng, 5)
        view1, view2 = augment.augment_views(batch["fbank"], aug_rng, augment_config)
        views, lam = [view1, view2], None
        if method.mix != "none":
            mixed, lam = mixing.mix(
                method.mix,
                view1,
                mix_rng,
                method.mix_alpha,
                method.mix_patch_aligned,
                patch_size,
                method.mix_per_sample,
            )
            views.append(mixed)

        def loss_fn(params):
            # One encoder pass over all views (the encoder has no batch statistics).
            encoded = encoder.apply(
                {"params": params["encoder"], "constants": state.constants},
                jnp.concatenate(views),
                train=True,
                trainable_blocks=trainable_blocks,
                rngs={"dropout": dropout_rng},
            )
            # (V, B, D): the head's BatchNorm keeps each view's statistics its own.
            pooled = encoded.pooled.reshape(len(views), -1, encoded.pooled.shape[-1])
            (projections, predictions), updates = head.apply(
                {"params": params["head"], "batch_stats": state.batch_stats},
                pooled,
                train=True,
                mutable=["batch_stats"],
            )
            batch_stats = updates["batch_stats"]
            (z1, z2), ema = targets(state, pooled[:2], projections[:2])
            nn1, index1 = nnclr.nearest_neighbour(
                state.queue, z1, batch["id"], nn1_rng, method.topk
            )
            nn2, _ = nnclr.nearest_neighbour(state.queue, z2, batch["id"], nn2_rng, method.topk)
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
            return loss, (batch_stats, ema, z1, index1, parts)

        (loss, (batch_stats, ema, z1, index1, parts)), grads = jax.value_and_grad(
            loss_fn, has_aux=True
        )(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if ema:
            ema = {
                "params": nnclr.ema_update(
                    ema["params"], params["head"]["projector"], method.ema_decay
                ),
                "batch_stats": ema["batch_stats"],
            }
        labels = batch.get("label")
        class_labels = labels if labels is not None and labels.ndim == 1 else None
        metrics = {"loss": loss, **parts}
        if class_labels is not None:
            metrics["nn_accuracy"] = nnclr.nn_accuracy(state.queue, index1, class_labels)
        queue = nnclr.enqueue(state.queue, z1, batch["id"], class_labels)
        new_state = state.replace(
            step=state.step + 1,
            params=params,
            batch_stats=batch_stats,
            ema=ema,
            opt_state=opt_state,
            queue=queue,
            rng=rng,
        )
        return new_state, metrics

    return step


def jit_step(step: StepFn, mesh: Mesh) -> StepFn:
    """Compiles ``step`` for the mesh: state replicated and donated, batch on 'data'."""
    replicated = sharding.replicated(mesh)
    return jax.jit(
        step,
        in_shardings=(replicated, sharding.batch_sharded(mesh)),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )
