"""The grain input pipeline: array_record source -> per-clip transforms -> batches, per host.

`make_iterator` returns grain's DataLoader iterator; `get_state()/set_state()` give an exact
resume point (the sampler position: grain derives every random draw from the seed and the
record's position, so a restored iterator replays the same clips, order and augmentations).
See uamix_jax.data.checkpointing for saving that state with orbax.
"""

from __future__ import annotations

import grain.python as grain
import jax
import ml_collections
from absl import flags

from uamix_jax import audio
from uamix_jax.data import augment, sources, transforms


def default_config() -> ml_collections.ConfigDict:
    """The data config (`config.data`) every job and evaluation config starts from.

    Defaults describe the built-in synthetic demo set; set `name`, `manual_dir`,
    `builder_config`, `split`, `target_length` and `norm` for a real data set.
    """
    config = ml_collections.ConfigDict()
    config.name = "synthetic"  # 'folder' | 'audioset' | 'esc50' | 'speech_commands' | 'synthetic'
    config.builder_config = ""  # '' = the builder's first: default, as20k, spc2; '*_fbank' variants
    config.data_dir = "data"  # where array_record data sets are written and read
    config.manual_dir = ""  # the source folder ('' for synthetic = DATA_DIR/synthetic_wavs)
    config.strict = False  # building fails on a bad file instead of skipping it
    config.split = "train"  # TFDS split syntax: 'train', 'fold1+fold2', 'train[:80%]'
    config.target_length = 1024  # frames: AudioSet 1024, ESC-50 512, Speech Commands 128
    config.norm = ml_collections.FieldReference("audioset")  # key of audio.NORM_STATS
    config.batch_size = 32  # GLOBAL; each host gets batch_size / process_count
    config.num_workers = 0  # grain worker processes; 0 = in the main process
    config.prefetch = 2  # batches each worker keeps ready
    config.read_threads = 4  # threads reading records ahead
    config.shuffle_seed = 0
    # Label indices to keep (single-label data; the folder layout numbers its sorted class
    # folder names); () keeps all. Lets pretraining/tuning and
    # the few-shot evaluation of held-out classes use disjoint classes of one data set.
    config.classes = ()
    # Host-side waveform augmentation, training only (AudioMAE's dataset.py).
    config.roll = False  # random circular shift of the waveform (roll_mag_aug)
    config.gain = False  # random magnitude Beta(10, 10) + 0.5 (roll_mag_aug)
    config.mixup_prob = 0.0  # AudioMAE fine-tunes AS-20K with 0.5
    config.mixup_alpha = 10.0  # lambda ~ Beta(alpha, alpha)
    # On-device view augmentation for the contrastive step (uamix_jax.data.augment).
    config.augment = augment.default_config()
    config.augment.norm = config.get_ref("norm")
    config.synthetic = ml_collections.ConfigDict(
        {"num_classes": 8, "clips_per_class": 20, "seconds": 2.0, "seed": 0}
    )
    return config


class HostRowsSampler:
    """One host's rows of every global batch of one endless, shuffled order of the records.

    Every host walks the same global order (epochs reshuffled from ``seed``); host ``h`` of
    ``H`` takes rows ``[h * B / H, (h + 1) * B / H)`` of each global batch of ``B``, and each
    record's random draws come from its global position. So the global batch of a step, and
    its augmentations, do not depend on how many hosts read it.
    """

    def __init__(self, num_records: int, global_batch: int, shard: tuple[int, int], seed: int):
        self._order = grain.IndexSampler(
            num_records=num_records, shuffle=True, num_epochs=None, seed=seed
        )
        self._host, self._hosts = shard
        self._global_batch, self._rows = global_batch, global_batch // self._hosts
        self._description = (
            f"HostRowsSampler(num_records={num_records}, global_batch={global_batch}, "
            f"shard={tuple(shard)}, seed={seed})"
        )

    def __len__(self) -> int:
        return len(self._order)

    def __repr__(self) -> str:
        return self._description

    def __getitem__(self, index: int) -> grain.RecordMetadata:
        batch, row = divmod(index, self._rows)
        position = batch * self._global_batch + self._host * self._rows + row
        record = self._order[position]
        return grain.RecordMetadata(index=index, record_key=record.record_key, rng=record.rng)


def make_iterator(
    data_config: ml_collections.ConfigDict,
    *,
    train: bool,
    seed: int | None = None,
    shard: tuple[int, int] | None = None,
    split: str | None = None,
) -> grain.PyGrainDatasetIterator:
    """An iterator of dict batches of NumPy arrays for this host's shard of the split.

    'fbank' float32 (B_local, T, 128) normalised; 'id' int32 (B_local,); 'label' int32
    (B_local,), or float32 (B_local, C) for multi-label data or when mixup is on (soft labels).
    train=True: shuffled by `seed` (default data_config.shuffle_seed), endless, augmented,
    last partial batch dropped. train=False: one pass in stored order, no augmentation, last
    batch kept. shard = (index, count), default (jax.process_index(), jax.process_count()).
    `split` overrides data_config.split.
    """
    shard = shard or (jax.process_index(), jax.process_count())
    shard_index, shard_count = shard
    if data_config.batch_size % shard_count:
        raise ValueError(
            f"data.batch_size {data_config.batch_size} is not divisible by the {shard_count} hosts"
        )
    if data_config.norm not in audio.NORM_STATS:
        raise ValueError(f"data.norm {data_config.norm!r} is not one of {sorted(audio.NORM_STATS)}")
    source, info = sources.open_source(data_config, split or data_config.split)
    mixup = train and data_config.mixup_prob > 0.0
    if mixup and info.storage != "waveform":
        raise ValueError(
            "data.mixup_prob > 0 needs a data set stored as waveforms (AudioMAE "
            f"mixes waveforms); {data_config.name} is stored as {info.storage}"
        )
    decode = transforms.Decode(
        storage=info.storage, num_classes=info.num_classes, vector_labels=info.multi_label or mixup
    )
    operations = [decode]
    if train and (data_config.roll or data_config.gain or mixup):
        operations.append(
            transforms.AugmentWaveform(
                source=source,
                decode=decode,
                roll=data_config.roll,
                gain=data_config.gain,
                mixup_prob=data_config.mixup_prob if mixup else 0.0,
                mixup_alpha=data_config.mixup_alpha,
            )
        )
    operations += [
        transforms.Features(
            storage=info.storage,
            target_length=data_config.target_length,
            stats=audio.NORM_STATS[data_config.norm],
        ),
        grain.Batch(data_config.batch_size // shard_count, drop_remainder=train),
    ]
    seed = data_config.shuffle_seed if seed is None else seed
    if train:
        sampler = HostRowsSampler(len(source), data_config.batch_size, shard, seed)
        shard_options = grain.NoSharding()
    else:
        sampler = grain.IndexSampler(num_records=len(source), shuffle=False, num_epochs=1)
        shard_options = grain.ShardOptions(shard_index, shard_count, drop_remainder=False)
    if data_config.num_workers and not flags.FLAGS.is_parsed():
        # grain's worker processes read its absl flags; a program that never parsed flags
        # (not started by absl.app: tests, notebooks) gets their defaults.
        flags.FLAGS.mark_as_parsed()
    loader = grain.DataLoader(
        data_source=source,
        sampler=sampler,
        shard_options=shard_options,
        operations=operations,
        worker_count=data_config.num_workers,
        worker_buffer_size=data_config.prefetch,
        # Records read ahead: a few batches' worth is enough, the fbank is the slow part.
        read_options=grain.ReadOptions(
            num_threads=data_config.read_threads, prefetch_buffer_size=4 * data_config.batch_size
        ),
    )
    return iter(loader)
