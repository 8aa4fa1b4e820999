"""Optimiser construction driven by regular expressions on parameter paths.

Parameter paths are the '/'-joined keys of the params tree, e.g.
``encoder/blocks_11/attn/qkv/kernel`` or ``projector/Dense_0/kernel``. Every rule
(trainable or not, weight decay, learning-rate multiplier) is a function of that
path, in the style of big_vision's optax helpers, so the same code serves the
progressive tuning job and full fine-tuning.

Frozen leaves go through ``optax.set_to_zero`` inside ``optax.multi_transform``:
the AdamW partition only ever sees the trainable leaves, so frozen leaves hold
no optimiser moments at all (they are ``optax.MaskedNode`` in the state tree).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax

PyTree = Any
TRAINABLE, FROZEN = "trainable", "frozen"
# Parameters outside the encoder that always train (the MAE decoder passes its own).
HEAD_PATTERN = r"(projector|predictor|head)/.*"
_BLOCK = re.compile(r"(?:^|/)blocks_(\d+)/")


def path_str(path: tuple) -> str:
    """Joins a jax key path into 'a/b/c'."""

    def name(key):
        for attribute in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey
            if hasattr(key, attribute):
                return str(getattr(key, attribute))
        return str(key)

    return "/".join(name(k) for k in path)


def tree_map_with_path_str(fn: Callable[[str, Any], Any], tree: PyTree) -> PyTree:
    """``jax.tree.map`` whose function receives the '/'-joined path of each leaf."""
    return jax.tree_util.tree_map_with_path(lambda p, x: fn(path_str(p), x), tree)


def first_match(path: str, rules: Sequence[tuple[str, Any]], default: Any) -> Any:
    """Value of the first ``(regex, value)`` rule whose regex fully matches ``path``."""
    for pattern, value in rules:
        if re.fullmatch(pattern, path):
            return value
    return default


def trainable_patterns(
    depth: int, trainable_blocks: int | None, head_pattern: str = HEAD_PATTERN
) -> list[str]:
    """Regexes of the trainable parameters when the top ``trainable_blocks`` train.

    Stage 0 (``trainable_blocks=0``) trains the head only. With k > 0 the top k
    blocks and the final norm train; the patch embedding, cls token and lower
    blocks stay frozen (docs/method.md, "Progressive retraining"). ``None`` trains the
    whole encoder (fine-tuning).
    """
    if trainable_blocks is None:
        return [head_pattern, r"encoder/.*"]
    if not 0 <= trainable_blocks <= depth:
        raise ValueError(f"trainable_blocks={trainable_blocks} must lie in [0, depth={depth}]")
    patterns = [head_pattern]
    if trainable_blocks:
        top = "|".join(str(i) for i in range(depth - trainable_blocks, depth))
        patterns += [rf"encoder/blocks_({top})/.*", r"encoder/(norm|fc_norm)/.*"]
    return patterns


def layer_decay_multiplier(path: str, depth: int, decay: float) -> float:
    """Layer-wise lr multiplier, numbered as AudioMAE/MAE's ``param_groups_lrd``.

    Stem (patch embedding, cls token) is layer 0, block i is layer i + 1, and the
    final norm and every head are layer depth + 1 with multiplier 1.
    """
    num_layers = depth + 1
    block = _BLOCK.search(path)
    if block:
        layer = int(block.group(1)) + 1
    elif re.search(r"(^|/)(cls_token|patch_embed|pos_embed)(/|$)", path):
        layer = 0
    else:
        layer = num_layers
    return decay ** (num_layers - layer)


def scale_by_path(multiplier: Callable[[str], float]) -> optax.GradientTransformation:
    """Multiplies each update by ``multiplier(path)`` (stateless).

    Path-based, not a tree of multipliers, so it also works inside
    ``optax.masked`` where the frozen leaves are absent from the updates.
    """

    def update(updates, state, params=None):
        del params
        return tree_map_with_path_str(lambda p, u: u * multiplier(p), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def learning_rate_schedule(
    config: ml_collections.ConfigDict, global_batch: int, total_steps: int
) -> optax.Schedule:
    """Linear warmup then cosine decay to ``min_lr``.

    Peak lr = base_lr * lr_batch_factor * global_batch / 256: MAE-CT scales its base
    lr by 2 * batch / 256 (docs/method.md), fine-tuning recipes by batch / 256.
    """
    peak = config.base_lr * config.lr_batch_factor * global_batch / 256
    warmup = int(round(config.warmup_fraction * total_steps))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=config.min_lr,
    )


def make_optimizer(
    config: ml_collections.ConfigDict,
    *,
    depth: int,
    trainable_blocks: int | None,
    global_batch: int,
    total_steps: int,
    head_pattern: str = HEAD_PATTERN,
) -> optax.GradientTransformation:
    """AdamW over the trainable leaves, ``set_to_zero`` over the frozen ones.

    ``config`` (the ``config.optim`` block) fields: base_lr, lr_batch_factor,
    warmup_fraction, min_lr, b1, b2, layer_decay, weight_decay (a list of
    ``(regex, decay)`` rules, first match wins, default 0), grad_clip (None = off).
    Learning-rate multipliers apply to the weight-decay term too, as in MAE's
    parameter groups.
    """
    wd_rules = [tuple(rule) for rule in config.weight_decay]

    def decay_mask(value: float):
        return lambda p: tree_map_with_path_str(
            lambda path, _: first_match(path, wd_rules, 0.0) == value, p
        )

    adamw = [optax.clip_by_global_norm(config.grad_clip)] if config.grad_clip else []
    adamw.append(optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps))
    adamw += [
        optax.add_decayed_weights(value, mask=decay_mask(value))
        for value in sorted({v for _, v in wd_rules if v})
    ]
    adamw.append(
        scale_by_path(lambda path: layer_decay_multiplier(path, depth, config.layer_decay))
    )
    adamw.append(
        optax.scale_by_learning_rate(learning_rate_schedule(config, global_batch, total_steps))
    )
    return optax.multi_transform(
        {TRAINABLE: optax.chain(*adamw), FROZEN: optax.set_to_zero()},
        lambda params: trainable_labels(params, depth, trainable_blocks, head_pattern),
    )


def trainable_labels(
    params: PyTree, depth: int, trainable_blocks: int | None, head_pattern: str = HEAD_PATTERN
) -> PyTree:
    """Tree of TRAINABLE / FROZEN labels matching ``params``.

    Every parameter must match a rule: the trainable patterns, or the encoder (frozen where
    not trainable). A parameter outside both (e.g. a new head whose path ``head_pattern``
    does not name) raises ValueError listing it, instead of being silently frozen.
    """
    rules = [(p, TRAINABLE) for p in trainable_patterns(depth, trainable_blocks, head_pattern)]
    rules.append((r"encoder/.*", FROZEN))
    labels = tree_map_with_path_str(lambda path, _: first_match(path, rules, None), params)
    uncovered = [
        path_str(path)
        for path, label in jax.tree_util.tree_leaves_with_path(labels, is_leaf=lambda x: x is None)
        if label is None
    ]
    if uncovered:
        raise ValueError(
            f"parameters matched by no trainable or frozen rule: {uncovered}; trainable rules "
            f"{[pattern for pattern, _ in rules[:-1]]}, frozen: encoder/.*"
        )
    return labels


def count_trainable(params: PyTree, depth: int, trainable_blocks: int | None) -> int:
    """Number of scalar parameters the optimiser updates in this stage."""
    labels = trainable_labels(params, depth, trainable_blocks)
    return sum(
        int(x.size)
        for x, label in zip(jax.tree.leaves(params), jax.tree.leaves(labels))
        if label == TRAINABLE
    )


def carry_over_state(old_state: PyTree, new_state: PyTree) -> PyTree:
    """Copies into ``new_state`` every leaf that ``old_state`` has at the same path.

    Used at a stage change: the new optimiser's state is freshly initialised, then
    the moments of parameters that were already trainable, and the step counts
    (so the lr schedule and Adam's bias correction continue), are taken over.
    Newly unfrozen leaves keep their fresh zero moments.
    """
    old = {path_str(p): x for p, x in jax.tree_util.tree_leaves_with_path(old_state)}

    def take(path, fresh):
        prior = old.get(path_str(path))
        return prior if prior is not None and jnp.shape(prior) == jnp.shape(fresh) else fresh

    return jax.tree_util.tree_map_with_path(take, new_state)


def stage_at(stages: Sequence[Sequence[int]], epoch: int) -> int:
    """Index of the progressive stage in force at ``epoch`` (stages sorted by epoch)."""
    index = 0
    for i, (start, _) in enumerate(stages):
        if epoch >= start:
            index = i
    return index


def validate_stages(stages: Sequence[Sequence[int]], depth: int, field: str) -> None:
    """Raises ValueError naming ``field`` unless the schedule is well formed."""
    if not stages:
        raise ValueError(f"{field} is empty: expected a list of (epoch, trainable_blocks)")
    epochs = []
    for entry in stages:
        if len(entry) != 2:
            raise ValueError(f"{field}: entry {entry!r} is not an (epoch, trainable_blocks) pair")
        epoch, blocks = entry
        if not 0 <= blocks <= depth:
            raise ValueError(f"{field}: trainable_blocks {blocks} outside [0, depth={depth}]")
        epochs.append(epoch)
    if epochs[0] != 0:
        raise ValueError(f"{field}: the first stage must start at epoch 0, got {epochs[0]}")
    if any(b <= a for a, b in zip(epochs, epochs[1:])):
        raise ValueError(f"{field}: epochs {epochs} must be strictly increasing")
