"""From a data config to a built data set on disk, and to its TF-free random-access source."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Sequence

import ml_collections
import tensorflow_datasets as tfds

from uamix_jax.data import builders, synthetic

SYNTHETIC_WAVS = "synthetic_wavs"  # where the synthetic clips go when manual_dir is empty


@dataclasses.dataclass(frozen=True)
class SourceInfo:
    """What the pipeline needs to know about a stored data set."""

    storage: str  # 'waveform' or 'fbank'
    num_classes: int
    multi_label: bool


def _layout_and_manual_dir(data_config: ml_collections.ConfigDict) -> tuple[str, str]:
    if data_config.name == "synthetic":
        return "folder", data_config.manual_dir or os.path.join(
            data_config.data_dir, SYNTHETIC_WAVS
        )
    return data_config.name, data_config.manual_dir


def prepared_dir(data_config: ml_collections.ConfigDict) -> str:
    """The folder of the array_record data set the config names (built or not)."""
    layout, _ = _layout_and_manual_dir(data_config)
    return builders.dataset_dir(
        layout, data_dir=data_config.data_dir, config=data_config.builder_config or None
    )


def prepare(data_config: ml_collections.ConfigDict) -> builders.BuildReport:
    """Builds the data set the config names, or reports the one already built.

    A built data set is only read back (no builder, no source folder needed), so a run can use
    a data set built elsewhere with `manual_dir` unset. 'synthetic' first writes its wavs.
    """
    path = prepared_dir(data_config)
    if builders.is_built(path):
        return builders.built_report(path)
    layout, manual_dir = _layout_and_manual_dir(data_config)
    if data_config.name == "synthetic" and not os.path.isdir(manual_dir):
        spec = data_config.synthetic
        synthetic.write_dataset(
            manual_dir,
            num_classes=spec.num_classes,
            clips_per_class=spec.clips_per_class,
            seconds=spec.seconds,
            seed=spec.seed,
        )
    return builders.build(
        layout,
        manual_dir=manual_dir,
        data_dir=data_config.data_dir,
        config=data_config.builder_config or None,
        strict=data_config.strict,
    )


class DataSource:
    """One split of a built data set (optionally only some classes), for grain to read.

    grain stores `repr(data_source)` with every iterator state and refuses to restore a state
    whose repr differs from the current source's. So the repr here is a description of what
    the records are, the same in every process for the same data: data set, builder config
    and version, split, kept classes, storage, class count and names (as a digest), number
    of records. No object address (which would refuse every resume) and no folder path (a
    data set copied elsewhere is still the same data). `describe()` gives it as a dict.
    """

    PREFIX = "uamix DataSource "  # repr = PREFIX + JSON of describe()

    def __init__(self, records, *, description: dict, indices: Sequence[int] | None = None):
        self._records = records
        self._indices = None if indices is None else list(indices)
        self._description = dict(description, records=len(self))

    def __len__(self) -> int:
        return len(self._records) if self._indices is None else len(self._indices)

    def __getitem__(self, index: int) -> dict:
        if self._indices is None:
            return self._records[index]
        return self._records[self._indices[index]]

    def describe(self) -> dict:
        """The fields of the description (a copy)."""
        return dict(self._description)

    def __repr__(self) -> str:
        return self.PREFIX + json.dumps(self._description)


def parse_description(text: str) -> dict | None:
    """The fields of a `DataSource` repr, or None if `text` is some other source's repr."""
    if not text.startswith(DataSource.PREFIX):
        return None
    try:
        fields = json.loads(text[len(DataSource.PREFIX) :])
    except json.JSONDecodeError:
        return None
    return fields if isinstance(fields, dict) else None


def _digest(names: Sequence[str]) -> str:
    """A short stable fingerprint of the class names (the full list can be 527 long)."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]


def open_source(data_config: ml_collections.ConfigDict, split: str):
    """The split (TFDS split syntax: 'fold1+fold2', 'train[:80%]') as a random-access source.

    Returns (DataSource, SourceInfo). Reads through TFDS's array_record data source: no
    TensorFlow, and no source folder. A non-empty `data_config.classes` (class indices) keeps
    only the clips of those classes, in stored order, each with its split-wide 'id' (so one
    built data set can give disjoint classes to tuning and to a few-shot evaluation).
    """
    path = prepared_dir(data_config)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"data set {data_config.name!r} is not built at {path}; build it with "
            "uamix_jax.data.sources.prepare(config) or `python -m uamix_jax.data.builders`"
        )
    builder = tfds.builder_from_directory(path)
    label = builder.info.features["label"]
    multi_label = isinstance(label, tfds.features.Sequence)
    info = SourceInfo(
        storage=builder.info.metadata["storage"],
        multi_label=multi_label,
        num_classes=(label.feature if multi_label else label).num_classes,
    )
    records = builder.as_data_source(split=split)
    classes = tuple(int(c) for c in data_config.get("classes") or ())
    indices = None
    if classes:
        if multi_label:
            raise ValueError(
                f"data.classes {classes} needs single-label data; "
                f"{data_config.name!r} is multi-label"
            )
        unknown = [c for c in classes if not 0 <= c < info.num_classes]
        if unknown:
            raise ValueError(
                f"data.classes holds {unknown}, outside the {info.num_classes} "
                f"classes of {data_config.name!r}"
            )
        keep = set(classes)
        indices = [i for i in range(len(records)) if int(records[i]["label"]) in keep]
    description = {
        "data_set": builder.info.name,
        "builder_config": builder.info.config_name,
        "version": str(builder.info.version),
        "split": str(split),
        "classes": sorted(set(classes)) if classes else "all",  # the kept set, in any order
        "storage": info.storage,
        "num_classes": info.num_classes,
        "class_names": _digest((label.feature if multi_label else label).names),
    }
    return DataSource(records, description=description, indices=indices), info
