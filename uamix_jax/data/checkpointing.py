"""Saving the input iterator's position with orbax, so a resumed run sees the same data.

grain ships an orbax CheckpointHandler for its iterators (one JSON state file per process,
`process_<i>-of-<n>.json`). In a composite orbax checkpoint, register it for the item
ITERATOR_ITEM and pass `save_args(iterator)` / `restore_args(iterator)`:

    manager = ocp.CheckpointManager(directory, item_handlers={
        ITERATOR_ITEM: grain.PyGrainCheckpointHandler(), 'state': ...})
    manager.save(step, args=ocp.args.Composite(state=..., data_iterator=save_args(iterator)))
    manager.restore(step, args=ocp.args.Composite(state=..., data_iterator=restore_args(it)))

The restored iterator continues with exactly the batches the interrupted run would have seen.

A saved state holds the description of the data it was reading (the `repr` of
`uamix_jax.data.sources.DataSource`: data set, config, split, classes, storage, records). A
state saved on other data cannot continue this run's data, so restoring it fails with
`DataMismatchError`, which shows both descriptions and the fields that differ; `set_state` is
the same check for a state held in memory.
"""

from __future__ import annotations

import json

import grain.python as grain

from uamix_jax.data import sources

ITERATOR_ITEM = "data_iterator"
_DATA_SOURCE = "data_source"  # the key under which grain's state holds repr(data_source)


class DataMismatchError(ValueError):
    """The saved iterator state was taken on data other than this iterator's."""


def save_args(iterator: grain.PyGrainDatasetIterator) -> grain.PyGrainCheckpointSave:
    """orbax save arguments for the iterator's current position."""
    return grain.PyGrainCheckpointSave(iterator)


def restore_args(iterator: grain.PyGrainDatasetIterator) -> grain.PyGrainCheckpointRestore:
    """orbax restore arguments: sets `iterator` (a fresh one, same config) to the saved position.

    The iterator is restored in place; a state saved on other data raises DataMismatchError.
    """
    return grain.PyGrainCheckpointRestore(_CheckedIterator(iterator))


def set_state(iterator: grain.PyGrainDatasetIterator, state: bytes) -> None:
    """`iterator.set_state(state)`, after checking the state was saved reading the same data."""
    check_same_data(saved=state, current=iterator.get_state())
    iterator.set_state(state)


def check_same_data(*, saved: bytes | str, current: bytes | str) -> None:
    """Raises DataMismatchError unless two grain iterator states describe the same data source.

    grain compares the same two strings when it restores, but only says that they differ;
    this names both and the differing fields, so the user can tell which data setting changed.
    """
    old, new = _source_repr(saved), _source_repr(current)
    if old == new:
        return
    raise DataMismatchError(
        "the data iterator state in the checkpoint was saved reading other data than this run "
        "reads, so it cannot resume here (start a new workdir, or run with the checkpoint's "
        "data settings).\n"
        f"  checkpoint: {old}\n"
        f"  this run:   {new}\n"
        f"  differs in: {describe_difference(old, new)}"
    )


def describe_difference(old: str, new: str) -> str:
    """'field: old -> new' for each field where two DataSource descriptions differ."""
    old_fields, new_fields = sources.parse_description(old), sources.parse_description(new)
    for name, fields in (("checkpoint's", old_fields), ("run's", new_fields)):
        if fields is None:
            return f"the whole description (the {name} is not a uamix DataSource description)"
    keys = list(old_fields) + [key for key in new_fields if key not in old_fields]
    changes = [
        f"{key}: {_show(old_fields, key)} -> {_show(new_fields, key)}"
        for key in keys
        if _show(old_fields, key) != _show(new_fields, key)
    ]
    return "; ".join(changes)


def _show(fields: dict, key: str) -> str:
    return json.dumps(fields[key]) if key in fields else "(absent)"


def _source_repr(state: bytes | str) -> str:
    if isinstance(state, bytes):
        state = state.decode()
    return json.loads(state)[_DATA_SOURCE]


class _CheckedIterator:
    """What grain's checkpoint handler restores into: checks the data, then sets the iterator.

    The handler calls `set_state(bytes)` and `start_prefetch()`, and hands this object back
    as the restored item, so it also iterates (and answers everything else) as the iterator
    it wraps, which is restored in place.
    """

    def __init__(self, iterator: grain.PyGrainDatasetIterator):
        self._iterator = iterator

    def set_state(self, state: bytes) -> None:
        set_state(self._iterator, state)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._iterator)

    def __getattr__(self, name: str):
        return getattr(self._iterator, name)
