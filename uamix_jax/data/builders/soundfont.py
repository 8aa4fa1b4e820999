"""A folder written by ``python -m uamix_jax.data.soundfont``: one class per SoundFont preset.

manual_dir layout (one split, 'train'):

    ROOT/
      soundfont.json              (the generator's record: source file, settings, classes)
      000_000_piano_1/p060_v100.wav
      ...

Read as the ``folder`` layout (class indices follow the sorted folder names, which the
generator makes bank-then-program order) with one more feature, 'family': the General MIDI
family of the preset (uamix_jax.data.soundfont.GM_FAMILIES), a second, coarser label.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle as tfds_shuffle

from uamix_jax.data import soundfont
from uamix_jax.data.builders import base
from uamix_jax.data.builders.folder import UamixFolder


# TFDS shuffles a split in memory up to 1 GB and past that spills to bucket files through
# TensorFlow's gfile, which the project does not install; the replay's dense notes of its
# seen programs (21k fbanks, about 1.1 GB) pass that, so this builder keeps up to this much
# in memory instead.
IN_MEMORY_SHUFFLE_BYTES = 8 << 30


class UamixSoundfont(UamixFolder):
    """Notes rendered from a SoundFont: label = preset, family = its General MIDI family."""

    BUILDER_CONFIGS = base.storage_configs([("default", "one class per SoundFont preset")])

    def _download_and_prepare(self, *args, **kwargs):
        limit = tfds_shuffle.MAX_MEM_BUFFER_SIZE
        tfds_shuffle.MAX_MEM_BUFFER_SIZE = max(limit, IN_MEMORY_SHUFFLE_BYTES)
        try:
            return super()._download_and_prepare(*args, **kwargs)
        finally:
            tfds_shuffle.MAX_MEM_BUFFER_SIZE = limit

    def _families(self) -> dict[str, int]:
        """Class folder -> family index, from the generator's soundfont.json."""
        metadata = soundfont.read_metadata(self.source_dir)
        if metadata is None:
            raise FileNotFoundError(
                f"{self.source_dir} holds no {soundfont.METADATA_FILE}: write the folder with "
                "`python -m uamix_jax.data.soundfont`"
            )
        families = metadata["families"]
        return {c["folder"]: families.index(c["family"]) for c in metadata["classes"]}

    def _class_names(self) -> list[str]:
        names = super()._class_names()
        unknown = sorted(set(names) - set(self._families()))
        if unknown:
            raise ValueError(
                f"{self.source_dir}: class folders {unknown} are not in {soundfont.METADATA_FILE}"
            )
        return names

    def _info(self) -> tfds.core.DatasetInfo:
        info = super()._info()
        features = dict(info.features)
        features["family"] = tfds.features.ClassLabel(names=list(soundfont.GM_FAMILIES))
        return tfds.core.DatasetInfo(
            builder=self,
            description=info.description,
            features=tfds.features.FeaturesDict(features),
            metadata=info.metadata,
        )

    def _generate_examples(self, split, entries, first_id):
        families = self._families()
        for key, example in super()._generate_examples(split, entries, first_id):
            folder = os.path.normpath(example["filename"]).split(os.sep)[0]
            yield key, dict(example, family=families[folder])
