"""Exact softmax attention for XLA:CPU, computed a few (clip, head) pairs at a time.

Plain autodiff of softmax(QK^T / sqrt(d))V writes the (B, H, N, N) scores and probabilities
to memory several times and reads them back in the backward pass; on a CPU those passes,
not the FLOPs, dominate. Here a loop walks over chunks of (clip, head) pairs small enough
that one chunk's N x N block stays in cache, and the backward pass recomputes each block's
probabilities from the saved log-sum-exp instead of storing them, using FlashAttention's
identity dS = P * (dP - rowsum(dO * O)) (Dao et al., 2022). Same result as the reference
to float32 rounding. Measurements: benchmarks/NOTES.md#cpu-kernels-attention.

Under data parallelism the batch axis is sharded over devices. The chunks are cut inside
each device's share of the batch (leading axis = device count, the project's 1-D data
mesh over every device), so the loop runs over an unsharded axis and XLA's partitioner
adds no collectives. With another layout the result is the same, only the chunking is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from uamix_jax.models.cpu_kernels.dense import with_ones_column

# Bytes of float32 scores per chunk: about 2 (clip, head) blocks at N = 513, small enough
# to stay in cache; 1 to 4 blocks perform alike.
CHUNK_SCORE_BYTES = 2 * 1024 * 1024
# Chunks per loop iteration. The element-wise passes of a chunk (scaling, row max, exp) run
# on one thread each; with two independent chunks in the loop body XLA's thunk executor can
# run one chunk's passes beside the other's.
CHUNKS_PER_ITERATION = 2


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


def _chunk_layout(batch: int, heads: int, length: int) -> tuple[int, int]:
    """(shards, pairs per chunk): shards = devices when they divide the batch, else 1."""
    devices = jax.device_count()
    shards = devices if batch % devices == 0 else 1
    pairs_per_shard = batch // shards * heads
    target = round(CHUNK_SCORE_BYTES / (4 * length * length))
    return shards, _largest_divisor_at_most(pairs_per_shard, target)


def _to_chunks(x: jax.Array, shards: int, pairs: int) -> jax.Array:
    """(B, H, N, ...) -> (chunks, [shards,] pairs, N, ...), the loop axis first.

    With one shard it is a plain reshape: a transpose, even of a size-1 axis, makes XLA
    copy the chunks.
    """
    batch, heads = x.shape[:2]
    if shards == 1:
        return x.reshape((-1, pairs) + x.shape[2:])
    grouped = x.reshape((shards, batch * heads // (shards * pairs), pairs) + x.shape[2:])
    return jnp.moveaxis(grouped, 1, 0)


def _from_chunks(x: jax.Array, shards: int, batch: int, heads: int) -> jax.Array:
    if shards == 1:
        return x.reshape((batch, heads) + x.shape[2:])
    return jnp.moveaxis(x, 0, 1).reshape((batch, heads) + x.shape[3:])


def _map_chunks(f, chunks: tuple[jax.Array, ...]):
    """lax.map of f(*chunk) over the leading axis, CHUNKS_PER_ITERATION chunks per iteration."""
    _, out = jax.lax.scan(
        lambda carry, xs: (carry, f(*xs)), None, chunks, unroll=CHUNKS_PER_ITERATION
    )
    return out


def _dot(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32)


def _row_max(x: jax.Array) -> jax.Array:
    """max over the last axis, keepdims. The select reducer is what XLA's fast min/max would
    emit, cheaper than jnp.max's NaN-propagating compare; a NaN score still reaches the
    output through exp."""
    return jax.lax.reduce(x, -jnp.inf, lambda a, b: jnp.where(a > b, a, b), (x.ndim - 1,))[
        ..., None
    ]


def _forward_chunk(q, k, v):
    # The scale multiplies Q (N x Dh), not the (N x N) scores: one pass fewer over the block.
    # Exact where Dh = 64 (scale 1/8).
    scores = _dot("...qd,...kd->...qk", q * q.shape[-1] ** -0.5, k)
    peak = _row_max(scores)
    unnormalised = jnp.exp(scores - peak).astype(v.dtype)
    # A column of ones appended to V makes the same dot return each row's sum, in place of
    # a separate reduction pass over the (N, N) block; normalising the (N, Dh) output
    # instead of the probabilities saves another pass.
    v_ones = with_ones_column(v)
    out_and_total = _dot("...qk,...kd->...qd", unnormalised, v_ones)
    out, total = out_and_total[..., :-1], out_and_total[..., -1:]
    return out / total, peak + jnp.log(total)


def _backward_chunk(q, k, v, out, log_sum_exp, d_out):
    """Gradients from the (key, query)-transposed probabilities P^T and dS^T.

    In that frame dV = P^T dO and dK = dS^T Q are plain matrix products, which XLA:CPU
    hands to YNNPACK (bf16 included); written from P and dS they contract P's first
    axis, which XLA runs as a float32 Eigen dot after converting P. Only dQ = (dS^T)^T K
    stays transposed. The scale is applied to Q and dQ, as in the
    forward pass, rather than to the (N x N) blocks.
    """
    scale = q.shape[-1] ** -0.5
    q_scaled = q * scale
    probs_t = jnp.exp(_dot("...kd,...qd->...kq", k, q_scaled) - jnp.swapaxes(log_sum_exp, -1, -2))
    d_v = _dot("...kq,...qd->...kd", probs_t.astype(d_out.dtype), d_out)
    d_probs_t = _dot("...kd,...qd->...kq", v, d_out)
    row_dot = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
    d_scores_t = (probs_t * (d_probs_t - row_dot[..., None, :])).astype(q.dtype)
    d_k = _dot("...kq,...qd->...kd", d_scores_t, q_scaled)
    d_q = _dot("...kq,...kd->...qd", d_scores_t, k) * scale
    return d_q, d_k, d_v


def _attention_with_residuals(q, k, v):
    batch, heads, length = q.shape[:3]
    shards, pairs = _chunk_layout(batch, heads, length)
    chunks = [_to_chunks(x, shards, pairs) for x in (q, k, v)]
    # The chunks return float32 and are rounded after the loop: with the rounding inside,
    # XLA:CPU rewrites the whole stacked output at every iteration.
    out, log_sum_exp = _map_chunks(_forward_chunk, tuple(chunks))
    out = _from_chunks(out, shards, batch, heads).astype(v.dtype)
    return out, (q, k, v, out, _from_chunks(log_sum_exp, shards, batch, heads))


@jax.custom_vjp
def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """softmax(QK^T / sqrt(d))V over (B, H, N, Dh) inputs; scores and softmax in float32."""
    return _attention_with_residuals(q, k, v)[0]


def _chunked_attention_backward(residuals, d_out):
    q = residuals[0]
    batch, heads, length = q.shape[:3]
    shards, pairs = _chunk_layout(batch, heads, length)
    chunks = [_to_chunks(x, shards, pairs) for x in (*residuals, d_out)]
    grads = _map_chunks(_backward_chunk, tuple(chunks))
    return tuple(
        _from_chunks(grad, shards, batch, heads).astype(x.dtype)
        for grad, x in zip(grads, residuals[:3])
    )


chunked_attention.defvjp(_attention_with_residuals, _chunked_attention_backward)


def qkv_attention(qkv: jax.Array) -> jax.Array:
    """(B, N, 3, H, Dh) fused projections laid out [q | k | v] -> (B, N, H, Dh) attention.

    q, k and v come out of one transpose by a split rather than by indexing, so the backward
    pass assembles d_qkv with one concatenation instead of adding three zero-padded copies.
    """
    heads_first = jnp.transpose(qkv, (2, 0, 3, 1, 4))  # (3, B, H, N, Dh)
    q, k, v = (jnp.squeeze(x, 0) for x in jnp.split(heads_first, 3))
    return jnp.swapaxes(chunked_attention(q, k, v), 1, 2)
