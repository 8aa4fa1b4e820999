"""Data parallelism over every device: a 1-D mesh with a 'data' axis.

The batch is sharded on 'data', the train state is replicated. Under ``jax.jit``
a computation on a globally sharded batch has global semantics, so the loss,
BatchNorm statistics and the queue all see the whole global batch.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every host)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding of the train state: one full copy per device."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding of batches: the leading axis split over the 'data' axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles each host's slice of the batch into globally sharded arrays."""
    sharding = batch_sharded(mesh)
    return {
        key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
        for key, value in local_batch.items()
    }


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a host-identical pytree on every device of the mesh."""
    return jax.device_put(tree, replicated(mesh))


def sync_hosts(name: str) -> None:
    """Waits until every host reaches this point (no-op on a single host)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
