"""AudioMAE's supervised fine-tuning recipes: the classifier, its loss and its evaluation.

The encoder is rebuilt in its classifier form (mean-pooled patch tokens -> fc_norm -> head)
and its trunk initialised from a pretrained checkpoint; each step applies SpecAugment and
the encoder's structured token masking (waveform mixup, where a recipe uses it, happens in
the data pipeline). The job (mode 'finetune') is `uamix_jax.jobs.finetune`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from uamix_jax.data import augment
from uamix_jax.evaluation import metrics as metrics_lib
from uamix_jax.models import audiomae
from uamix_jax.training import optim, runner, sharding

LOSSES = ("bce", "softmax_ce")
# Parameters that `init_from_pretrained` never copies: AudioMAE re-initialises the head.
_FRESH = ("head",)


def build_classifier(
    config: ml_collections.ConfigDict, num_classes: int
) -> tuple[audiomae.AudioMAEEncoder, Any | None]:
    """(classifier, pretrained variables or None): the init checkpoint's (or a preset's) shape
    with the recipe's fields, its positional embedding cropped to the data's target_length."""
    recipe = dict(
        final_norm="fc_norm",
        num_classes=num_classes,
        drop_path_rate=config.model.drop_path_rate,
        kernels=config.model.kernels,
        target_length=config.data.target_length,
    )
    if not config.init_checkpoint:
        return audiomae.AudioMAEEncoder(
            audiomae.preset(config.model.preset, **config.model.overrides, **recipe)
        ), None
    pretrained, variables = audiomae.load(
        config.init_checkpoint, target_length=config.data.target_length
    )
    return audiomae.AudioMAEEncoder(pretrained.config.replace(**recipe)), variables


def init_from_pretrained(
    model: audiomae.AudioMAEEncoder, rng: jax.Array, pretrained: Any | None
) -> dict:
    """Fresh classifier variables with every pretrained parameter of the same path and shape.

    A pretrained MAE encoder ends with `norm`, which the classifier does not have; its
    `fc_norm` starts fresh, as in AudioMAE's fine-tuning with global pooling.
    """
    fbank = jnp.zeros((1, model.config.target_length, model.config.num_mel_bins), jnp.float32)
    variables = jax.tree.map(np.asarray, model.init(rng, fbank))
    if pretrained is None:
        return variables
    source = {
        optim.path_str(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(pretrained)
    }
    fresh = []

    def take(path, leaf):
        name = optim.path_str(path)
        prior = source.get(name)
        if prior is None or np.shape(prior) != leaf.shape or name.split("/")[1] in _FRESH:
            fresh.append(name)
            return leaf
        return np.asarray(prior, leaf.dtype)

    variables = jax.tree_util.tree_map_with_path(take, variables)
    logging.info("Fine-tuning: initialised fresh (not in the pretrained checkpoint): %s", fresh)
    return variables


def classification_loss(
    logits: jax.Array, labels: jax.Array, kind: str, label_smoothing: float = 0.0
) -> jax.Array:
    """Mean loss of (B, C) logits against int (B,) or (soft) multi-hot (B, C) labels.

    'bce' is PyTorch's BCEWithLogitsLoss (mean over batch and classes), AudioMAE's AudioSet
    loss (main_finetune_as.py); 'softmax_ce' is the cross-entropy with label smoothing that
    its single-label recipe uses (main_finetune_esc.py, smoothing 0.1).
    """
    if labels.ndim == 1:
        labels = jax.nn.one_hot(labels, logits.shape[-1])
    if kind == "bce":
        return optax.sigmoid_binary_cross_entropy(logits, labels).mean()
    if kind == "softmax_ce":
        labels = optax.smooth_labels(labels, label_smoothing) if label_smoothing else labels
        return optax.softmax_cross_entropy(logits, labels).mean()
    raise ValueError(f"config.loss={kind!r}: expected one of {LOSSES}")


def make_loss(model: audiomae.AudioMAEEncoder, config: ml_collections.ConfigDict) -> runner.LossFn:
    """The fine-tuning loss ``(params, state, batch, rngs) -> (loss, (metrics, aux))``:
    SpecAugment, the encoder's structured token masking, classification loss."""
    fill_value = augment.audiomae_fill_value(config.data.norm)

    def loss_fn(params, state: runner.TrainState, batch: dict, rngs: dict):
        fbank = augment.spec_augment(
            batch["fbank"],
            rngs["augment"],
            config.specaug.freq_mask,
            config.specaug.time_mask,
            fill_value,
        )
        out = model.apply(
            {"params": params["encoder"], "constants": state.constants},
            fbank,
            train=True,
            mask_t_prob=config.mask_t_prob,
            mask_f_prob=config.mask_f_prob,
            rngs={k: rngs[k] for k in ("dropout", "drop_path", "masking")},
        )
        loss = classification_loss(out.logits, batch["label"], config.loss, config.label_smoothing)
        return loss, ({}, None)

    return loss_fn


def make_eval_step(model: audiomae.AudioMAEEncoder) -> Callable:
    """`(state, fbank) -> logits` without any augmentation or masking."""

    def step(state: runner.TrainState, fbank: jax.Array) -> jax.Array:
        return model.apply(
            {"params": state.params["encoder"], "constants": state.constants}, fbank
        ).logits

    return step


def _pad_to(batch: np.ndarray, size: int) -> np.ndarray:
    """Pads the leading axis with zeros (a short last batch keeps the compiled shape)."""
    return np.concatenate([batch, np.zeros((size - len(batch),) + batch.shape[1:], batch.dtype)])


def evaluate(
    eval_step: Callable,
    state: runner.TrainState,
    batches: Iterable[dict],
    batch_size: int,
    mesh: jax.sharding.Mesh,
    config: ml_collections.ConfigDict,
) -> dict[str, float]:
    """Loss and metric ('accuracy' or 'mAP', fractions) over a whole split, one row per clip."""
    logits, labels, ids = [], [], []
    for batch in batches:
        rows = len(batch["fbank"])
        fbank = sharding.global_batch({"fbank": _pad_to(batch["fbank"], batch_size)}, mesh)["fbank"]
        logits.append(np.asarray(jax.device_get(eval_step(state, fbank)))[:rows])
        labels.append(batch["label"])
        ids.append(batch["id"])
    ids, first = np.unique(np.concatenate(ids), return_index=True)  # drop any repeated clips
    logits, labels = np.concatenate(logits)[first], np.concatenate(labels)[first]
    loss = float(classification_loss(jnp.asarray(logits), jnp.asarray(labels), config.loss))
    if config.metric == "mAP":
        if labels.ndim == 1:  # single-label data: one-hot targets
            labels = np.eye(logits.shape[-1], dtype=np.float32)[labels]
        return {"eval/loss": loss, "eval/mAP": metrics_lib.mean_average_precision(logits, labels)}
    return {"eval/loss": loss, "eval/accuracy": metrics_lib.accuracy(logits, labels)}


def fold_splits(folds: int) -> list[tuple[str, str]]:
    """(train, test) split names of k-fold cross-validation over 'fold1' ... 'fold<folds>'."""
    return [
        ("+".join(f"fold{j}" for j in range(1, folds + 1) if j != i), f"fold{i}")
        for i in range(1, folds + 1)
    ]
