"""Frozen-encoder features of a whole data set split, cached on disk.

The cache key is a digest of the encoder's weights (not its path: a checkpoint rewritten in
place must not hit a stale cache), of the data config, of the split and of the readout, so
any change to any of them recomputes the features.

A readout names which tokens of which block become a clip's feature (`parse_readout`):
'mean_patch' is the encoder's own pooled output (mean of the patch tokens after the final
norm); 'cls' the cls token after the final norm; a '_prenorm' suffix drops the final norm;
a 'block<k>:' prefix reads the output of block k instead of the last one (block 0 is the
patch embedding plus positional embedding, the input of the first block), the final norm's
weights applied to it unless '_prenorm'.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from uamix_jax.data import pipeline
from uamix_jax.embed import compute_embeddings, padded_batches
from uamix_jax.models import kernels as K
from uamix_jax.models.vit_layers import Block

DEFAULT_READOUT = "mean_patch"
POOLINGS = ("mean_patch", "cls", "mean_patch_prenorm", "cls_prenorm")


@dataclasses.dataclass(frozen=True)
class SplitEmbeddings:
    """Pooled features of every clip of a split, in clip-id order."""

    embeddings: np.ndarray  # (N, D) float32
    labels: np.ndarray  # (N,) int32, or (N, C) float32 multi-hot
    ids: np.ndarray  # (N,) int32 clip index within the split


def variables_fingerprint(variables: Any) -> str:
    """Digest of every leaf's path, dtype, shape and bytes: identifies an encoder's weights."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables):
        leaf = np.asarray(leaf)
        digest.update(f"{jax.tree_util.keystr(path)}|{leaf.dtype}|{leaf.shape}".encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()[:20]


def cache_key(encoder_fingerprint: str, data_config: ml_collections.ConfigDict, split: str) -> str:
    """File stem identifying (encoder, data config, split)."""
    data = json.dumps(data_config.to_dict(), sort_keys=True, default=str)
    data_digest = hashlib.sha256(f"{data}|{split}".encode()).hexdigest()[:20]
    return f"{data_config.get('name', 'data')}-{split}-{encoder_fingerprint}-{data_digest}"


def encoder_fingerprint(model: Any, variables: Any) -> str:
    """Digest of the encoder's config (dtype, length, ...) and of its weights."""
    config = json.dumps(model.config.to_dict(), sort_keys=True)
    return hashlib.sha256(f"{config}|{variables_fingerprint(variables)}".encode()).hexdigest()[:20]


def parse_readout(readout: str, depth: int) -> tuple[int, str]:
    """(block index in [0, depth], pooling in POOLINGS) of a readout name; ValueError if bad."""
    block, pooling = depth, readout
    if ":" in readout:
        prefix, pooling = readout.split(":", 1)
        if not re.fullmatch(r"block\d+", prefix) or not 0 <= int(prefix[5:]) <= depth:
            raise ValueError(
                f"readout {readout!r}: expected 'block<k>:<pooling>' with k in [0, {depth}]"
            )
        block = int(prefix[5:])
    if pooling not in POOLINGS:
        raise ValueError(f"readout {readout!r}: the pooling must be one of {POOLINGS}")
    return block, pooling


def all_readouts(depth: int) -> tuple[str, ...]:
    """Every block's every pooling, block 0 (patch embedding) to block `depth`."""
    return tuple(f"block{k}:{p}" for k in range(depth + 1) for p in POOLINGS)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _readouts(model: Any, variables: Any, fbank: jax.Array, readouts: tuple[str, ...]) -> dict:
    """{readout: (B, D) features} of one batch from one forward pass of the encoder."""
    cfg = model.config
    if cfg.final_norm != "norm":
        raise ValueError(
            f"readouts {readouts} need an encoder with final_norm='norm' (the token norm); "
            f"this one has final_norm={cfg.final_norm!r}"
        )
    trunk = []  # block 0 (the first block's input), then every block's output

    def record(next_fun, args, kwargs, context):
        if not (isinstance(context.module, Block) and context.method_name == "__call__"):
            return next_fun(*args, **kwargs)
        if not trunk:
            trunk.append(args[0])  # a Block's first argument is its token sequence
        result = next_fun(*args, **kwargs)
        trunk.append(result)
        return result

    with nn.intercept_methods(record):
        model.apply(variables, fbank)
    norm = K.layer_norm(cfg.kernels, dtype=jnp.dtype(cfg.dtype), name="norm")
    norm_variables = {"params": variables["params"]["norm"]}
    features = {}
    for readout in readouts:
        block, pooling = parse_readout(readout, cfg.depth)
        tokens = trunk[block]
        if not pooling.endswith("_prenorm"):
            tokens = norm.apply(norm_variables, tokens)
        pooled = tokens[:, 1:].mean(axis=1) if pooling.startswith("mean_patch") else tokens[:, 0]
        features[readout] = pooled.astype(jnp.float32)
    return features


def readout_embeddings(
    model: Any, variables: Any, fbank: np.ndarray, readouts: tuple[str, ...], batch_size: int
) -> dict[str, np.ndarray]:
    """{readout: (N, D) float32} of (N, T, F) normalised fbanks, in batches of `batch_size`
    (the last one zero-padded, so the encoder compiles once)."""
    outputs = {readout: [] for readout in readouts}
    for padded, count in padded_batches(fbank, batch_size):
        for readout, value in _readouts(model, variables, padded, tuple(readouts)).items():
            outputs[readout].append(np.asarray(value)[:count])
    return {readout: np.concatenate(values) for readout, values in outputs.items()}


def _extract(
    model: Any,
    variables: Any,
    data_config: ml_collections.ConfigDict,
    split: str,
    readouts: tuple[str, ...],
) -> dict[str, SplitEmbeddings]:
    labels, ids, fbanks = [], [], []
    for batch in pipeline.make_iterator(data_config, train=False, shard=(0, 1), split=split):
        labels.append(batch["label"])
        ids.append(batch["id"])
        fbanks.append(np.asarray(batch["fbank"], np.float32))
    if readouts == (DEFAULT_READOUT,):
        # The encoder's own pooled output, through the same function as uamix_jax.embed.
        features = {DEFAULT_READOUT: compute_embeddings(model, variables, fbanks, data_config.batch_size)}
    else:
        features = readout_embeddings(
            model, variables, np.concatenate(fbanks), readouts, data_config.batch_size
        )
    labels, ids = np.concatenate(labels), np.concatenate(ids)
    # One row per clip, in id order, whatever order (and any repeats) the iterator produced.
    ids, first = np.unique(ids, return_index=True)
    return {
        readout: SplitEmbeddings(np.asarray(value, np.float32)[first], labels[first], ids)
        for readout, value in features.items()
    }


def extract_split(
    model: Any,
    variables: Any,
    data_config: ml_collections.ConfigDict,
    split: str,
    cache_dir: str | None = None,
    readout: str = DEFAULT_READOUT,
) -> SplitEmbeddings:
    """Features (`readout`, see `parse_readout`) of `split` of the data set `data_config`
    describes.

    With `cache_dir`, features are read from `cache_dir/<key>.npz` when present and written
    there otherwise (the key is `cache_key`, plus the readout unless it is the default).
    """
    parse_readout(readout, model.config.depth)
    path = None
    if cache_dir:
        stem = cache_key(encoder_fingerprint(model, variables), data_config, split)
        if readout != DEFAULT_READOUT:
            stem += "-" + re.sub(r"[^a-z0-9]+", "_", readout)
        path = os.path.join(cache_dir, stem + ".npz")
        if os.path.exists(path):
            with np.load(path) as cached:
                return SplitEmbeddings(cached["embeddings"], cached["labels"], cached["ids"])
    result = _extract(model, variables, data_config, split, (readout,))[readout]
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        temporary = path + ".tmp.npz"  # written then renamed, so a killed run leaves no half file
        np.savez(temporary, **dataclasses.asdict(result))
        os.replace(temporary, path)
    return result


def extract_readouts(
    model: Any,
    variables: Any,
    data_config: ml_collections.ConfigDict,
    split: str,
    readouts: tuple[str, ...],
) -> dict[str, SplitEmbeddings]:
    """{readout: features of `split`} for several readouts from one pass over the data."""
    for readout in readouts:
        parse_readout(readout, model.config.depth)
    return _extract(model, variables, data_config, split, tuple(readouts))
