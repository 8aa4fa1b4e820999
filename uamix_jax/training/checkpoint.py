"""Orbax checkpoints of a run: the train state plus every host's data-iterator state.

Orbax writes each step into a temporary directory and renames it when complete, so a
run killed at any moment leaves only whole checkpoints behind; saving is asynchronous
(the loop continues while arrays are written).
"""

from __future__ import annotations

import os
from typing import Any

import grain.python as grain
import jax
import ml_collections
import orbax.checkpoint as ocp

from uamix_jax.data import checkpointing as data_checkpointing

STATE, DATA = "state", data_checkpointing.ITERATOR_ITEM


def make_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
    """A manager over ``workdir/checkpoints`` with the settings of ``config.checkpoint``
    (every_steps, max_to_keep, asynchronous)."""
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=config.every_steps,
        max_to_keep=config.max_to_keep,
        enable_async_checkpointing=config.asynchronous,
    )
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, "checkpoints")),
        options=options,
        item_handlers={
            STATE: ocp.StandardCheckpointHandler(),
            DATA: grain.PyGrainCheckpointHandler(),
        },
    )


def save(
    manager: ocp.CheckpointManager, step: int, state: Any, data_iterator: Any, force: bool = False
) -> bool:
    """Saves ``state`` as ``step`` when the interval says so (or ``force``); True if it did.

    Each host writes its own iterator state (grain's handler names the file by process
    index), so multi-host runs resume every shard where it stopped.
    """
    return manager.save(
        step,
        args=ocp.args.Composite(
            **{
                STATE: ocp.args.StandardSave(state),
                DATA: data_checkpointing.save_args(data_iterator),
            }
        ),
        force=force,
    )


def restore(manager: ocp.CheckpointManager, target: Any, data_iterator: Any) -> Any:
    """Restores the latest step into ``target``'s structure and shardings.

    The iterator is restored in place.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = manager.restore(
        manager.latest_step(),
        args=ocp.args.Composite(
            **{
                STATE: ocp.args.StandardRestore(abstract),
                DATA: data_checkpointing.restore_args(data_iterator),
            }
        ),
    )
    return restored[STATE]
