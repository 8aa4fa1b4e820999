"""Saving and loading AudioMAE encoders: an orbax checkpoint of the variables plus config.json.

Layout of a checkpoint directory:
  config.json   AudioMAEConfig.to_dict(): the architecture (the kernels are the loader's choice)
  variables/    orbax StandardCheckpointer tree {'params': ..., 'constants': {'pos_embed'}}
The directory is assembled under a temporary name next to the target and renamed into
place, so a reader never sees a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from uamix_jax.models.audiomae_config import AudioMAEConfig
from uamix_jax.models.audiomae_encoder import AudioMAEEncoder
from uamix_jax.models.pos_embed import adapt_pos_embed

CONFIG_FILE = "config.json"
VARIABLES_DIR = "variables"


def local_checkpointer() -> ocp.StandardCheckpointer:
    """An orbax checkpointer of this process alone: an exported model is written by one
    process and read by any, never waiting for the other processes of a multi-host run."""
    index = jax.process_index()
    return ocp.StandardCheckpointer(
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            primary_host=index, active_processes={index}
        )
    )


def save(
    directory: str | os.PathLike, config: AudioMAEConfig, variables: Any, overwrite: bool = False
) -> None:
    """Writes `variables` and `config` to `directory` atomically (see the module docstring)."""
    target = os.path.abspath(os.fspath(directory))
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", dir=parent)
    try:
        host_variables = jax.tree_util.tree_map(np.asarray, variables)
        checkpointer = local_checkpointer()
        checkpointer.save(os.path.join(staging, VARIABLES_DIR), host_variables)
        checkpointer.wait_until_finished()
        with open(os.path.join(staging, CONFIG_FILE), "w") as f:
            json.dump(config.to_dict(), f, indent=2)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_config(directory: str | os.PathLike) -> AudioMAEConfig:
    """The AudioMAEConfig stored in a checkpoint directory."""
    path = os.path.join(os.fspath(directory), CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: {directory} is not an audiomae.save checkpoint")
    try:
        with open(path) as f:
            return AudioMAEConfig.from_dict(json.load(f))
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise ValueError(f"{path} is not a valid AudioMAE config: {error}") from error


def load(
    directory: str | os.PathLike, target_length: Optional[int] = None, **config_overrides: Any
) -> tuple[AudioMAEEncoder, dict]:
    """Reads a checkpoint written by `save` (or by the converter) into (model, variables).

    target_length: input frames to build the model for; when shorter than the checkpoint's,
      the positional embedding is cropped the way AudioMAE's fine-tuning recipes do it.
    config_overrides: training-time and execution fields to change (dtype, remat,
      drop_path_rate, kernels, ...).
    """
    stored = read_config(directory)
    abstract = jax.eval_shape(
        AudioMAEEncoder(stored).init,
        jax.random.PRNGKey(0),
        jnp.zeros((1, stored.target_length, stored.num_mel_bins), jnp.float32),
    )
    abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), abstract)
    path = os.path.join(os.path.abspath(os.fspath(directory)), VARIABLES_DIR)
    try:
        variables = local_checkpointer().restore(path, abstract)
    except Exception as error:  # orbax raises many types; all mean the same to the caller
        raise ValueError(
            f"Could not restore AudioMAE variables from {path} for the config in "
            f"{CONFIG_FILE}: {error}"
        ) from error
    variables = jax.tree_util.tree_map(np.asarray, variables)

    config = stored.replace(**config_overrides)
    if target_length is not None and target_length != stored.target_length:
        config = config.replace(target_length=target_length)
        constants = dict(variables["constants"])
        constants["pos_embed"] = adapt_pos_embed(constants["pos_embed"], stored.grid, config.grid)
        variables = {**variables, "constants": constants}
    return AudioMAEEncoder(config), variables
