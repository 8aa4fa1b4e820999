"""Building a data set by name, and the report of the files it had to skip."""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import tensorflow_datasets as tfds

from uamix_jax.data.builders import base
from uamix_jax.data.builders.audioset import UamixAudioset
from uamix_jax.data.builders.esc50 import UamixEsc50
from uamix_jax.data.builders.folder import UamixFolder
from uamix_jax.data.builders.soundfont import UamixSoundfont
from uamix_jax.data.builders.speech_commands import UamixSpeechCommands

BUILDERS: dict[str, type[base.AudioBuilder]] = {
    "folder": UamixFolder,
    "audioset": UamixAudioset,
    "esc50": UamixEsc50,
    "speech_commands": UamixSpeechCommands,
    "soundfont": UamixSoundfont,
}
SKIPPED_FILE = "skipped_files.txt"
# TFDS writes it into the temporary folder that is renamed into place once the build is done.
DATASET_INFO = "dataset_info.json"


@dataclasses.dataclass(frozen=True)
class BuildReport:
    """Where the data set was written, its split sizes, and the files skipped as unreadable."""

    path: str
    num_examples: dict[str, int]
    skipped: list[dict[str, str]]


def dataset_dir(name: str, *, data_dir: str, config: str | None = None) -> str:
    """Where `build` writes (and readers find) a data set: DATA_DIR/uamix_NAME/CONFIG/VERSION."""
    builder_class = _builder_class(name)
    config = config or builder_class.BUILDER_CONFIGS[0].name
    return os.path.join(data_dir, builder_class.name, config, str(builder_class.VERSION))


def is_built(path: str) -> bool:
    """Whether `path` (a `dataset_dir`) holds a finished data set.

    The data set's dataset_info.json is what readers open, and it appears at `path` only with
    the finished build (TFDS renames its temporary folder into place at the end).
    """
    return os.path.isfile(os.path.join(path, DATASET_INFO))


def built_report(path: str) -> BuildReport:
    """The BuildReport of the finished data set at `path`, read from its stored metadata."""
    info = tfds.builder_from_directory(path).info
    return BuildReport(
        path=os.fspath(path),
        skipped=list(info.metadata["skipped"]),
        num_examples={split: split_info.num_examples for split, split_info in info.splits.items()},
    )


def _builder_class(name: str) -> type[base.AudioBuilder]:
    if name not in BUILDERS:
        raise ValueError(f"unknown data set layout {name!r}; expected one of {sorted(BUILDERS)}")
    return BUILDERS[name]


def make_builder(
    name: str, *, manual_dir: str, data_dir: str, config: str | None = None, strict: bool = False
) -> base.AudioBuilder:
    """The builder for a layout name in BUILDERS (config None = the builder's first config)."""
    builder_class = _builder_class(name)
    return builder_class(
        manual_dir=manual_dir,
        data_dir=data_dir,
        strict=strict,
        config=config or builder_class.BUILDER_CONFIGS[0].name,
    )


def build(
    name: str, *, manual_dir: str, data_dir: str, config: str | None = None, strict: bool = False
) -> BuildReport:
    """Prepares the data set (a no-op when it already exists) and writes its skip report.

    Skipped files are listed, one JSON object a line, in `skipped_files.txt` beside the
    array_record files, and kept in the data set's metadata. A data set already built is only
    read back: no builder is made, so its source folder (`manual_dir`) need not exist any more.
    """
    path = dataset_dir(name, data_dir=data_dir, config=config)
    if is_built(path):
        return built_report(path)
    builder = make_builder(
        name, manual_dir=manual_dir, data_dir=data_dir, config=config, strict=strict
    )
    builder.download_and_prepare()
    skipped = list(builder.info.metadata["skipped"])
    with open(os.path.join(builder.data_dir, SKIPPED_FILE), "w") as file:
        file.writelines(json.dumps(item) + "\n" for item in skipped)
    if skipped:
        logging.warning(
            "%s: skipped %d unreadable files, listed in %s",
            builder.data_dir,
            len(skipped),
            os.path.join(builder.data_dir, SKIPPED_FILE),
        )
    return BuildReport(
        path=os.fspath(builder.data_dir),
        skipped=skipped,
        num_examples={split: info.num_examples for split, info in builder.info.splits.items()},
    )
