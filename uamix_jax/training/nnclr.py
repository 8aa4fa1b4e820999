"""NNCLR support queue, nearest-neighbour lookup and the uaMix-MAE losses.

All functions see whole arrays: under ``jax.jit`` with globally sharded inputs the queue
update, the lookup and the softmax over the batch run over the global batch, which is what
MAE-CT's all-gathers achieve in PyTorch.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

from uamix_jax.training.mixing import partner_indices

EMPTY = -1  # id / label of a queue slot that holds nothing (or a clip without a label)


@flax.struct.dataclass
class Queue:
    """FIFO support set. ``z`` (L, d) float32 L2-normalised; ``ids``/``labels`` (L,) int32, -1 if
    empty/unknown; ``ptr`` () int32, the slot the next batch is written to."""

    z: jax.Array
    ids: jax.Array
    labels: jax.Array
    ptr: jax.Array


def default_method_config() -> ml_collections.ConfigDict:
    """The method's defaults, one place (their sources: docs/method.md)."""
    return ml_collections.ConfigDict(
        dict(
            mix="t_cutmix",  # one of mixing.MIX_KINDS
            mix_alpha=1.0,  # Beta(alpha, alpha): CutMix / Un-Mix / i-Mix default
            mix_per_sample=True,  # one lambda and span per clip (False: per batch, as Un-Mix)
            mix_patch_aligned=False,
            mix_weight=1.0,  # w_mix
            temperature=0.15,  # MAE-CT ViT-B
            topk=20,  # MAE-CT ViT-B
            queue_size=4096,  # ~20% of AudioSet-20K; a multiple of power-of-two global batches
            ema_decay=0.99,  # MAE-CT ViT-B target projector; 0 disables the EMA projector
            proj_hidden_dim=2048,
            output_dim=256,
            pred_hidden_dim=4096,
        )
    )


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Rows divided by their L2 norm (norms below ``eps`` clamp to ``eps``, like F.normalize).

    Written with the squared norm so the gradient stays finite at a zero row.
    """
    squared = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(squared, eps * eps))


def _similarity(rows: jax.Array, columns: jax.Array) -> jax.Array:
    """rows @ columns.T in float32 at full precision: TPUs otherwise multiply f32 in bfloat16
    passes, which the 1/tau scaling would amplify and which can change the chosen neighbour."""
    return jnp.matmul(
        rows.astype(jnp.float32), columns.astype(jnp.float32).T, precision=jax.lax.Precision.HIGHEST
    )


def init_queue(size: int, dim: int) -> Queue:
    """An empty queue of ``size`` slots of ``dim``-d projections."""
    if size <= 0 or dim <= 0:
        raise ValueError(f"NNCLR queue size and dim must be positive, got size={size}, dim={dim}")
    return Queue(
        z=jnp.zeros((size, dim), jnp.float32),
        ids=jnp.full((size,), EMPTY, jnp.int32),
        labels=jnp.full((size,), EMPTY, jnp.int32),
        ptr=jnp.zeros((), jnp.int32),
    )


def enqueue(queue: Queue, z: jax.Array, ids: jax.Array, labels: jax.Array | None = None) -> Queue:
    """Writes a batch (normalised, without gradient) over the oldest slots; FIFO.

    The queue size must be a multiple of the batch size so a batch never straddles the end.
    ``labels`` (B,) int, optional, are kept only for the NN-accuracy monitor.
    """
    size, batch = queue.z.shape[0], z.shape[0]
    if size % batch:
        raise ValueError(
            f"NNCLR queue size ({size}) must be a multiple of the global batch size ({batch})"
        )
    if labels is None:
        labels = jnp.full((batch,), EMPTY, jnp.int32)
    z = l2_normalize(jax.lax.stop_gradient(z).astype(jnp.float32))
    return Queue(
        z=jax.lax.dynamic_update_slice_in_dim(queue.z, z, queue.ptr, axis=0),
        ids=jax.lax.dynamic_update_slice_in_dim(
            queue.ids, ids.astype(jnp.int32), queue.ptr, axis=0
        ),
        labels=jax.lax.dynamic_update_slice_in_dim(
            queue.labels, labels.astype(jnp.int32), queue.ptr, axis=0
        ),
        ptr=(queue.ptr + batch) % size,
    )


def nearest_neighbour(
    queue: Queue, z: jax.Array, ids: jax.Array, rng: jax.Array, topk: int = 1
) -> tuple[jax.Array, jax.Array]:
    """NN(z): one of the ``topk`` most cosine-similar queue entries, drawn uniformly, no gradient.

    Entries holding the query's own clip id and empty slots are never chosen. A query with
    no admissible entry (a queue still empty at the first step) gets its own normalised z.
    Returns ``(nn (B, d) float32 normalised, index (B,) int32 into the queue, -1 if none)``.
    ``topk`` is static; ``topk=1`` is the plain nearest neighbour.
    """
    size = queue.z.shape[0]
    if not 1 <= topk <= size:
        raise ValueError(f"NNCLR topk must be in [1, queue size={size}], got {topk}")
    query = l2_normalize(jax.lax.stop_gradient(z).astype(jnp.float32))
    admissible = (queue.ids[None, :] != EMPTY) & (queue.ids[None, :] != ids[:, None])
    similarity = jnp.where(admissible, _similarity(query, queue.z), -jnp.inf)
    top_similarity, top_index = jax.lax.top_k(similarity, topk)
    candidate = jnp.isfinite(top_similarity)
    choice = jax.random.categorical(rng, jnp.where(candidate, 0.0, -jnp.inf), axis=-1)
    index = jnp.take_along_axis(top_index, choice[:, None], axis=1)[:, 0]
    found = candidate.any(axis=-1)
    nn = jnp.where(found[:, None], queue.z[index], query)
    return jax.lax.stop_gradient(nn), jnp.where(found, index, EMPTY).astype(jnp.int32)


def nn_accuracy(queue: Queue, index: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of queries whose looked-up neighbour carries the query's label (monitoring).

    ``index`` from ``nearest_neighbour``; queries without a neighbour count as misses.
    """
    hit = (index != EMPTY) & (queue.labels[index] == labels)
    return hit.mean(dtype=jnp.float32)


def _soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean over rows of -sum_c targets[r, c] log softmax(logits[r])[c]."""
    return -(targets * jax.nn.log_softmax(logits, axis=-1)).sum(axis=-1).mean()


def nnclr_loss(nn: jax.Array, p: jax.Array, tau: float) -> jax.Array:
    """CE(nn . normalize(p)^T / tau, I): row i (neighbour i) must pick column i (prediction i).

    ``nn`` (B, d) normalised neighbours, ``p`` (B, d) raw predictions; MAE-CT's orientation.
    """
    logits = _similarity(nn, l2_normalize(p.astype(jnp.float32))) / tau
    return _soft_cross_entropy(logits, jnp.eye(nn.shape[0], dtype=jnp.float32))


def clean_loss(
    nn1: jax.Array, nn2: jax.Array, p1: jax.Array, p2: jax.Array, tau: float
) -> jax.Array:
    """L_clean = 1/2 [CE(NN(z1) p2^T / tau, I) + CE(NN(z2) p1^T / tau, I)]."""
    return 0.5 * (nnclr_loss(nn1, p2, tau) + nnclr_loss(nn2, p1, tau))


def mix_loss(nn_clean: jax.Array, p_mixed: jax.Array, lam: jax.Array, tau: float) -> jax.Array:
    """Virtual-label loss of the mixed views.

    s_i = normalize(p(m_i)) . NN(z^clean)^T / tau: row i is mixed clip i, columns are the
    batch's clean neighbours (its B instance classes). Target: lam_i at column i and
    1 - lam_i at column partner(i) (the reversed batch):
    mean_i [-lam_i log softmax(s_i)[i] - (1 - lam_i) log softmax(s_i)[partner(i)]].
    """
    batch = nn_clean.shape[0]
    logits = _similarity(l2_normalize(p_mixed.astype(jnp.float32)), nn_clean) / tau
    lam = lam.astype(jnp.float32)[:, None]
    own = jnp.eye(batch, dtype=jnp.float32)
    targets = lam * own + (1.0 - lam) * own[partner_indices(batch)]
    return _soft_cross_entropy(logits, targets)


def uamix_loss(
    nn1: jax.Array,
    nn2: jax.Array,
    p1: jax.Array,
    p2: jax.Array,
    p_mixed: jax.Array | None,
    lam: jax.Array | None,
    tau: float,
    mix_weight: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L = L_clean + mix_weight * L_mix, with ``(total, {'loss_clean', 'loss_mix'})``.

    The mixed views are built from view 1, so their targets are the neighbours of the
    other view, ``nn2``, as in the clean loss where view-2 predictions meet view-1
    neighbours. ``p_mixed=None`` (mix kind 'none') leaves only the clean loss.
    """
    loss_clean = clean_loss(nn1, nn2, p1, p2, tau)
    if p_mixed is None:
        loss_mix = jnp.zeros((), jnp.float32)
    else:
        loss_mix = mix_loss(nn2, p_mixed, lam, tau)
    return loss_clean + mix_weight * loss_mix, {"loss_clean": loss_clean, "loss_mix": loss_mix}


def ema_update(target: Any, online: Any, decay: float) -> Any:
    """decay * target + (1 - decay) * online, leaf by leaf (MAE-CT's EMA target projector)."""
    return jax.tree_util.tree_map(lambda t, o: decay * t + (1.0 - decay) * o, target, online)
