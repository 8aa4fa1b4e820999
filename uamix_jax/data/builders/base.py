"""The shared machinery of every audio data set builder: features, decoding, bad-file policy.

Each concrete builder only says which classes exist and which files belong to which split
(`_class_names`, `_split_entries`); this base turns those entries into TFDS examples stored as
array_record, readable later through `tfds.builder_from_directory(...).as_data_source()` with
no TensorFlow installed (only Tensor/ClassLabel/Text features are used: they need no TF).
"""

from __future__ import annotations

import abc
import dataclasses
import os
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds

from uamix_jax import audio

SAMPLE_RATE = 16000
STORAGES = ("waveform", "fbank")
# int16 full scale: the same convention as reading a 16-bit PCM file as float in [-1, 1).
INT16_SCALE = 32768.0


@dataclasses.dataclass(frozen=True)
class AudioEntry:
    """One example to write: a file (or a 1-s segment of it) and its class index/indices."""

    key: str  # unique within a split; TFDS orders records by its hash
    path: str
    label: int | tuple[int, ...]
    segment: int | None = None  # index of a SAMPLE_RATE-long segment, None = whole file


@dataclasses.dataclass
class AudioBuilderConfig(tfds.core.BuilderConfig):
    """storage: 'waveform' (16 kHz int16, the default) or 'fbank' (raw float32 Kaldi fbank)."""

    storage: str = "waveform"


def storage_configs(subsets: Sequence[tuple[str, str]]) -> list[AudioBuilderConfig]:
    """One config per (subset, storage): 'NAME' stores waveforms, 'NAME_fbank' fbanks."""
    configs = []
    for name, description in subsets:
        for storage in STORAGES:
            suffix = "" if storage == "waveform" else f"_{storage}"
            configs.append(
                AudioBuilderConfig(
                    name=f"{name}{suffix}",
                    storage=storage,
                    description=f"{description} ({storage})",
                )
            )
    return configs


def waveform_to_int16(waveform: np.ndarray) -> np.ndarray:
    """float waveform in [-1, 1) -> int16, clipped (a mean-removed full-scale file may exceed 1)."""
    scaled = np.round(waveform * INT16_SCALE)
    return np.clip(scaled, -INT16_SCALE, INT16_SCALE - 1).astype(np.int16)


def int16_to_waveform(samples: np.ndarray) -> np.ndarray:
    """The inverse of waveform_to_int16 (up to rounding): float32 in [-1, 1)."""
    return samples.astype(np.float32) / INT16_SCALE


class AudioBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the project's audio builders (not registered itself).

    Constructor keywords besides TFDS's own: `manual_dir` (the data set's folder, needed to build
    and to know the class names) and `strict` (fail on the first bad file instead of skipping it).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MULTI_LABEL = False
    # TFDS 4.9.10 locates a builder's download-checksums file through `code_path`, which imports
    # importlib_resources (declared as a TFDS dependency only for Python < 3.9). These builders
    # download nothing, so they have no such file.
    code_path = None

    def __init__(
        self, *, manual_dir: str | os.PathLike | None = None, strict: bool = False, **kwargs
    ):
        # Set before TFDS's __init__, which already calls _info().
        self._source_dir = None if manual_dir is None else os.fspath(manual_dir)
        self._strict = strict
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    @property
    def source_dir(self) -> str:
        """The manual_dir given at construction; a clear error if it is missing or absent."""
        if self._source_dir is None or not os.path.isdir(self._source_dir):
            raise FileNotFoundError(
                f"{self.name}: manual_dir {self._source_dir!r} is not a folder; it must hold the "
                f"data set in the layout documented in {type(self).__module__}"
            )
        return self._source_dir

    @abc.abstractmethod
    def _class_names(self) -> list[str]:
        """Class names in label-index order."""

    @abc.abstractmethod
    def _split_entries(self) -> dict[str, list[AudioEntry]]:
        """Split name -> the entries to write, in a deterministic order."""

    # TFDS announces a build as a download; nothing is downloaded here.
    def _log_download_bytes(self) -> None:
        print(f"building {self.name}/{self.builder_config.name} from {self.source_dir}")

    def _log_download_done(self) -> None:
        print(f"built {self.data_dir}")

    def _info(self) -> tfds.core.DatasetInfo:
        storage = self.builder_config.storage
        if storage not in STORAGES:
            raise ValueError(f"{self.name}: storage {storage!r} is not one of {STORAGES}")
        label = tfds.features.ClassLabel(names=self._class_names())
        signal = (
            tfds.features.Tensor(shape=(None,), dtype=np.int16)
            if storage == "waveform"
            else tfds.features.Tensor(shape=(None, 128), dtype=np.float32)
        )
        features = tfds.features.FeaturesDict(
            {
                storage: signal,
                "label": tfds.features.Sequence(label) if self.MULTI_LABEL else label,
                "id": np.int32,
                "filename": tfds.features.Text(),
            }
        )
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=features,
            metadata=tfds.core.MetadataDict(
                sample_rate=SAMPLE_RATE, storage=storage, multi_label=self.MULTI_LABEL, skipped=[]
            ),
        )

    def _split_generators(self, dl_manager) -> dict[str, Iterator]:
        del dl_manager  # the files are read from self.source_dir, given at construction
        generators, first_id = {}, 0
        for split, entries in self._split_entries().items():
            generators[split] = self._generate_examples(split, entries, first_id)
            first_id += len(entries)
        return generators

    def _generate_examples(self, split: str, entries: list[AudioEntry], first_id: int):
        """Decodes each entry; bad files are skipped (and recorded) unless strict.

        'id' is first_id + the entry's position: unique over the whole data set, so also
        within a union of splits (ESC-50's training folds); a skipped file leaves a gap.
        """
        storage = self.builder_config.storage
        for clip_id, entry in enumerate(entries, start=first_id):
            try:
                waveform = self._load(entry)
            except audio.AudioLoadError as error:
                if self._strict:
                    raise
                self.info.metadata["skipped"].append(
                    {"split": split, "path": entry.path, "error": str(error)}
                )
                continue
            signal = (
                waveform_to_int16(waveform)
                if storage == "waveform"
                else audio.kaldi_fbank(waveform, SAMPLE_RATE)
            )
            label = list(entry.label) if self.MULTI_LABEL else entry.label
            yield (
                entry.key,
                {
                    storage: signal,
                    "label": label,
                    "id": clip_id,
                    "filename": os.path.relpath(entry.path, self.source_dir),
                },
            )

    def _load(self, entry: AudioEntry) -> np.ndarray:
        waveform = audio.load_audio(entry.path, SAMPLE_RATE)
        if entry.segment is None:
            return waveform
        segment = waveform[entry.segment * SAMPLE_RATE : (entry.segment + 1) * SAMPLE_RATE]
        if segment.size < SAMPLE_RATE:
            raise audio.AudioLoadError(
                f"audio file {entry.path} has no full 1-s segment number {entry.segment}"
            )
        return segment - segment.mean()
