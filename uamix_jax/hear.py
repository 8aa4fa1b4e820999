"""The HEAR embedding API for any `audiomae.save` directory, on audio of any length.

    from uamix_jax import hear
    model = hear.load_model("checkpoints/audiomae_as2m")
    scene = hear.get_scene_embeddings(audio, model)           # (n_sounds, D)
    frames, times_ms = hear.get_timestamp_embeddings(audio, model)

`audio` is (n_sounds, n_samples) float at 16 kHz, in [-1, 1], at least one 25 ms fbank
frame (400 samples) long; NumPy, JAX or torch. Results come back in the input's kind.

How a sound becomes embeddings (docs/hear.md says more):
- Front end: the sound's mean is removed and its Kaldi fbank computed on the host, as for
  training. The fbank is cut into windows of the checkpoint's `target_length` frames (10.24 s
  for AudioSet models). A window holding fewer real frames (a short sound, a long sound's
  last window) is encoded at the shortest of a few window lengths that holds them
  (`window_lengths`: 128, 256, 512 and 1024 frames for AudioSet models), with the first rows
  of the positional embedding, so that its tokens are encoded exactly as the first time rows
  of a full padded window would be if the tokens after them were masked out, as in MAE
  pretraining. The rest of that length is zero-padded in raw log-mel and then normalised,
  exactly as AudioMAE pads a short clip. Windows from all sounds are encoded
  in device batches of `batch_size` windows of one length (a tail in a zero-filled batch of
  the next power of two), so the jitted encoder compiles for a handful of shapes whatever
  the audio lengths.
- Scene: windows start every `target_length` frames (no overlap); the scene embedding is the
  mean of their pooled embeddings weighted by how many real (not padding) frames each holds.
  A sound of at most one window gets exactly the encoder's pooled embedding of the sound in
  its window length.
- Timestamps: one embedding per time column of patch tokens (the mean over its frequency
  patches; for a fine-tuned 'fc_norm' encoder, that mean through fc_norm, as pooling does). A
  column spans `patch_size` frames (160 ms), so the windows are encoded `patch_size / hop`
  times, shifted by 0, hop, 2 hop, ... frames, and the columns interleave into a grid with
  `timestamp_hop_ms` spacing (default 40 ms: four encoder passes per window of audio, four
  times the scene cost). The shifted passes of a window are encoded at that window's length.
  Every timestamp embedding is a column the encoder actually produced;
  nothing is interpolated. A column's timestamp is the centre of the real audio its frames
  cover, so the last few, which partly cover padding, are closer together than the hop.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import os
from typing import Any, Iterable, Iterator, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from uamix_jax import audio as audio_lib
from uamix_jax.audio import mel
from uamix_jax.models import audiomae

SAMPLE_RATE = 16000
DEFAULT_TIMESTAMP_HOP_MS = 40.0
DEFAULT_BATCH_SIZE = 16
# Shortest window: AudioMAE's shortest fine-tuning input (Speech Commands, 1.28 s).
DEFAULT_MIN_WINDOW_FRAMES = 128
FRAMEWORKS = ("jax", "torch")
LAYER_NORM_EPSILON = 1e-6  # every AudioMAE LayerNorm uses it


@dataclasses.dataclass(eq=False)
class HearModel:
    """An AudioMAE encoder with its variables and the settings the HEAR functions need."""

    encoder: audiomae.AudioMAEEncoder
    variables: Any
    norm_stats: tuple[float, float]
    timestamp_hop_frames: int
    batch_size: int
    # Window length in frames -> (encoder, variables) at that length, the longest being
    # `encoder` itself; see `window_lengths`.
    windows: dict = dataclasses.field(default_factory=dict)
    sample_rate: int = SAMPLE_RATE

    @property
    def scene_embedding_size(self) -> int:
        return self.encoder.config.embed_dim

    @property
    def timestamp_embedding_size(self) -> int:
        return self.encoder.config.embed_dim

    @property
    def window_frames(self) -> int:
        """Fbank frames per encoder window: the checkpoint's (or the requested) target_length."""
        return self.encoder.config.target_length

    @property
    def timestamp_hop_ms(self) -> float:
        return self.timestamp_hop_frames * mel.FRAME_SHIFT_MS

    @property
    def window_lengths(self) -> tuple[int, ...]:
        """The window lengths (frames) the encoder runs at, shortest first."""
        return tuple(sorted(self.windows))

    def fitting_window(self, real_frames: int) -> int:
        """The shortest window length holding `real_frames` frames (the longest if none does)."""
        for length in self.window_lengths:
            if length >= real_frames:
                return length
        return self.window_frames


def load_model(
    model_file_path: Union[str, os.PathLike] = "",
    *,
    norm: str = "audioset",
    timestamp_hop_ms: float = DEFAULT_TIMESTAMP_HOP_MS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    target_length: Optional[int] = None,
    min_window_frames: int = DEFAULT_MIN_WINDOW_FRAMES,
    framework: str = "jax",
) -> Any:
    """Loads an `audiomae.save` directory for the HEAR functions.

    norm: fbank normalisation statistics, a key of `audio.NORM_STATS` (the ones the encoder was
      trained with; AudioSet's for AudioMAE and models tuned from it).
    timestamp_hop_ms: spacing of timestamp embeddings; a multiple of the 10 ms frame shift that
      divides the patch width (16 frames: 10, 20, 40, 80 or 160 ms). Each halving doubles the
      cost of timestamp embeddings.
    batch_size: windows per device call.
    target_length: window length in frames, at most the checkpoint's (shorter windows crop the
      positional embedding as AudioMAE's fine-tuning recipes do).
    min_window_frames: the shortest window; see `window_lengths`. `target_length` (or more)
      pads every window to the full length.
    framework: 'jax' returns a HearModel; 'torch' wraps it in a torch.nn.Module (no
      parameters; computation stays in JAX) for hear-eval-kit, which accepts only torch or
      TensorFlow models: pass `--model-options '{"framework": "torch"}'` to its runner.
    """
    if not model_file_path:
        raise ValueError("load_model needs model_file_path: an audiomae.save checkpoint directory")
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework={framework!r}; expected one of {FRAMEWORKS}")
    _check_settings(norm, batch_size)
    encoder, variables = audiomae.load(model_file_path, target_length=target_length)
    model = from_encoder(
        encoder,
        variables,
        norm=norm,
        timestamp_hop_ms=timestamp_hop_ms,
        batch_size=batch_size,
        min_window_frames=min_window_frames,
    )
    return _torch_wrapper_class()(model) if framework == "torch" else model


def from_encoder(
    encoder: audiomae.AudioMAEEncoder,
    variables: Any,
    *,
    norm: str = "audioset",
    timestamp_hop_ms: float = DEFAULT_TIMESTAMP_HOP_MS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    min_window_frames: int = DEFAULT_MIN_WINDOW_FRAMES,
) -> HearModel:
    """A HearModel from an encoder already in memory (e.g. right after training)."""
    _check_settings(norm, batch_size)
    config = encoder.config
    variables = jax.device_put(variables)
    windows = {config.target_length: (encoder, variables)}
    for length in window_lengths(config.target_length, config.patch_size, min_window_frames)[:-1]:
        short = config.replace(target_length=length)
        # The first rows of the table: the codes of the first length / patch time rows of a
        # full window (tokens are time-major), so each token is encoded as in a full window.
        constants = dict(variables["constants"])
        constants["pos_embed"] = constants["pos_embed"][:, : 1 + short.num_patches]
        windows[length] = (audiomae.AudioMAEEncoder(short), {**variables, "constants": constants})
    return HearModel(
        encoder=encoder,
        variables=variables,
        norm_stats=audio_lib.NORM_STATS[norm],
        timestamp_hop_frames=_hop_frames(timestamp_hop_ms, config.patch_size),
        batch_size=batch_size,
        windows=windows,
    )


def window_lengths(target_length: int, patch: int, min_window_frames: int) -> tuple[int, ...]:
    """Window lengths in frames, shortest first: min_window_frames doubling while shorter than
    target_length, then target_length (only target_length if min_window_frames >= it).

    All are multiples of the patch size, so each is a whole grid of time patches; a task
    therefore compiles the encoder for at most this many window lengths.
    """
    if not (isinstance(min_window_frames, int) and min_window_frames > 0):
        raise ValueError(f"min_window_frames={min_window_frames!r} must be a positive int")
    if min_window_frames % patch:
        raise ValueError(
            f"min_window_frames={min_window_frames} must be a multiple of the {patch}-frame "
            "patch width"
        )
    lengths = []
    length = min_window_frames
    while length < target_length:
        lengths.append(length)
        length *= 2
    return tuple(lengths) + (target_length,)


def _check_settings(norm: str, batch_size: int) -> None:
    if norm not in audio_lib.NORM_STATS:
        raise ValueError(f"norm={norm!r} unknown; choose from {sorted(audio_lib.NORM_STATS)}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size={batch_size!r} must be a positive int")


def get_scene_embeddings(audio: Any, model: Any) -> Any:
    """(n_sounds, n_samples) audio -> (n_sounds, D) float32, in the input's array kind."""
    hear_model = _unwrap(model)
    waveforms = _waveforms(audio, hear_model)
    rows = list(embed_waveforms(waveforms, hear_model, level="scene"))
    return _like(audio, np.stack(rows))


def get_timestamp_embeddings(audio: Any, model: Any) -> tuple[Any, Any]:
    """(n_sounds, n_samples) audio -> embeddings (n_sounds, n_timestamps, D) float32 and
    timestamps (n_sounds, n_timestamps) float32 in ms (centres), in the input's array kind.

    n_timestamps = ceil(frames / hop) with frames = 1 + (n_samples - 400) // 160.
    """
    hear_model = _unwrap(model)
    waveforms = _waveforms(audio, hear_model)
    results = list(embed_waveforms(waveforms, hear_model, level="timestamp"))
    embeddings = np.stack([e for e, _ in results])
    timestamps = np.stack([t for _, t in results])
    return _like(audio, embeddings), _like(audio, timestamps)


def embed_waveforms(
    waveforms: Iterable[np.ndarray], model: HearModel, level: str = "scene"
) -> Iterator[Any]:
    """Embeds mono 16 kHz waveforms of any lengths, yielding one result per waveform in order.

    level 'scene' yields (D,) float32; 'timestamp' yields (embeddings (n, D), timestamps (n,)
    ms) float32. Waveforms are used as given (no mean removal: `audio.load_audio` and the HEAR
    functions do that). The iterable is read lazily, and a result is yielded as soon as the
    last of its windows has been encoded, so a long stream of files needs little memory.
    """
    if level not in ("scene", "timestamp"):
        raise ValueError(f"level={level!r}; expected 'scene' or 'timestamp'")
    config = model.encoder.config
    window, patch = config.target_length, config.patch_size
    offsets = range(0, patch, model.timestamp_hop_frames) if level == "timestamp" else (0,)
    with_columns = level == "timestamp"
    pending: collections.deque[_Sound] = collections.deque()
    # Windows to encode, one queue per window length: (sound, slot, first frame).
    queues: dict[int, list[tuple[_Sound, int, int]]] = {n: [] for n in model.window_lengths}
    # Finished sounds wait for the oldest one; past this many, its windows go in part batches.
    max_pending = 4 * model.batch_size

    in_flight: list[tuple[list, Any]] = []  # a dispatched batch: its windows and outputs

    def run(length: int, count: int) -> None:
        queue = queues[length]
        jobs, queue[:] = queue[:count], queue[count:]
        # Full batches while the stream lasts; a tail goes in the smallest power of two
        # (capped at batch_size) that holds it, so one short sound does not pay for a whole
        # batch and the encoder compiles only for batch sizes 1, 2, 4, ... and batch_size.
        rows = min(model.batch_size, 1 << (count - 1).bit_length())
        batch = np.zeros((rows, length, config.num_mel_bins), np.float32)
        for row, (sound, _, start) in enumerate(jobs):
            batch[row] = _window_features(sound.fbank, start, length, model.norm_stats)
        encoder, variables = model.windows[length]
        # JAX dispatches asynchronously: the previous batch is read back only now, so the
        # device works on one batch while the host prepares the next.
        outputs = _encode(encoder, variables, batch, with_columns)
        collect()
        in_flight.append((jobs, outputs))

    def collect() -> None:
        for jobs, (pooled, columns) in in_flight:
            pooled = np.asarray(pooled)
            columns = np.asarray(columns) if with_columns else None
            for row, (sound, slot, _) in enumerate(jobs):
                sound.pooled[slot] = pooled[row]
                if with_columns:
                    sound.columns[slot] = columns[row]
                sound.remaining -= 1
        in_flight.clear()

    def unblock_oldest() -> None:
        oldest = pending[0]
        for length, queue in queues.items():
            if any(job[0] is oldest for job in queue):
                run(length, len(queue))  # fewer than batch_size: full queues run at once
                return
        collect()  # its last windows are in flight

    def finished() -> Iterator[Any]:
        while pending and pending[0].remaining == 0:
            sound = pending.popleft()
            yield _scene(sound, window) if level == "scene" else _timestamps(sound, window, patch)

    for waveform in waveforms:
        sound = _Sound(audio_lib.kaldi_fbank(np.asarray(waveform, np.float32), SAMPLE_RATE))
        frames = sound.fbank.shape[0]
        for offset in offsets:
            for start in range(offset, frames, window):
                # The shifted passes of a window run at the length that fits its real frames.
                length = model.fitting_window(min(window, frames - (start - offset)))
                sound.starts.append((offset, start))
                queues[length].append((sound, len(sound.starts) - 1, start))
        sound.remaining = len(sound.starts)
        sound.pooled = [None] * sound.remaining
        sound.columns = [None] * sound.remaining
        pending.append(sound)
        for length, queue in queues.items():
            while len(queue) >= model.batch_size:
                run(length, model.batch_size)
                yield from finished()
        while len(pending) > max_pending:
            unblock_oldest()
            yield from finished()
    for length, queue in queues.items():
        while queue:
            run(length, min(len(queue), model.batch_size))
    collect()
    yield from finished()


@dataclasses.dataclass(eq=False)
class _Sound:
    """One waveform's fbank, its windows (offset, first frame) and their encoder outputs."""

    fbank: np.ndarray
    starts: list = dataclasses.field(default_factory=list)
    pooled: list = dataclasses.field(default_factory=list)
    columns: list = dataclasses.field(default_factory=list)
    remaining: int = 0


def _window_features(
    fbank: np.ndarray, start: int, length: int, stats: tuple[float, float]
) -> np.ndarray:
    # The same operations, in the same order, as audio.clip_features on a clip's fbank.
    return audio_lib.normalize(audio_lib.pad_or_crop(fbank[start : start + length], length), stats)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _encode(encoder, variables, windows: jax.Array, with_columns: bool):
    """Pooled (B, D) embeddings and, if asked, per-time-column ones (B, T / patch, D)."""
    output = encoder.apply(variables, windows)
    if not with_columns:
        return output.pooled, None
    config = encoder.config
    time_patches, freq_patches = config.grid
    patches = output.tokens[:, 1:].reshape(
        windows.shape[0], time_patches, freq_patches, config.embed_dim
    )
    columns = patches.mean(axis=2)  # patch tokens are time-major: k = t * freq_patches + f
    if config.final_norm == "fc_norm":
        columns = _layer_norm(columns, variables["params"]["fc_norm"])
    return output.pooled, columns.astype(jnp.float32)


def _layer_norm(x: jax.Array, params: Any) -> jax.Array:
    """fc_norm applied to column means: LayerNorm with AudioMAE's epsilon, in float32."""
    x = x.astype(jnp.float32)
    mean = x.mean(axis=-1, keepdims=True)
    variance = jnp.square(x - mean).mean(axis=-1, keepdims=True)
    normalised = (x - mean) * jax.lax.rsqrt(variance + LAYER_NORM_EPSILON)
    return normalised * params["scale"].astype(jnp.float32) + params["bias"].astype(jnp.float32)


def _scene(sound: _Sound, window: int) -> np.ndarray:
    frames = sound.fbank.shape[0]
    if len(sound.pooled) == 1:
        return sound.pooled[0]  # exactly the encoder's pooled embedding of the whole sound
    weights = np.array([min(window, frames - start) for _, start in sound.starts], np.float64)
    pooled = np.stack(sound.pooled).astype(np.float64)
    return (weights @ pooled / weights.sum()).astype(np.float32)


def _timestamps(sound: _Sound, window: int, patch: int) -> tuple[np.ndarray, np.ndarray]:
    frames = sound.fbank.shape[0]
    first_frames, rows = [], []
    for (_, start), columns in zip(sound.starts, sound.columns):
        column_starts = start + patch * np.arange(columns.shape[0])
        keep = column_starts < frames
        first_frames.append(column_starts[keep])
        rows.append(columns[keep])
    first_frames = np.concatenate(first_frames)
    order = np.argsort(first_frames, kind="stable")
    first_frames = first_frames[order]
    embeddings = np.concatenate(rows)[order]
    return embeddings.astype(np.float32), column_centres_ms(first_frames, frames, patch)


def column_centres_ms(first_frames: np.ndarray, num_frames: int, patch: int) -> np.ndarray:
    """Centre, in ms, of the real audio under patch columns starting at `first_frames`.

    A column covers fbank frames [a, min(a + patch, num_frames)); frame j covers samples
    [160 j, 160 j + 400) at 16 kHz. For a full 16-frame column that is 10 a + 87.5 ms.
    """
    frame_length, frame_shift, _ = mel.frame_geometry(SAMPLE_RATE)
    first = np.asarray(first_frames, np.int64)
    last = np.minimum(first + patch, num_frames) - 1
    centre_samples = (first * frame_shift + last * frame_shift + frame_length) / 2.0
    return (centre_samples * 1000.0 / SAMPLE_RATE).astype(np.float32)


def num_timestamps(num_samples: int, model: Any) -> int:
    """How many timestamp embeddings a sound of num_samples gets (ceil(frames / hop))."""
    frames = mel.num_frames(num_samples, SAMPLE_RATE)
    return math.ceil(frames / _unwrap(model).timestamp_hop_frames)


def _hop_frames(hop_ms: float, patch: int) -> int:
    frames = hop_ms / mel.FRAME_SHIFT_MS
    if not (frames >= 1 and frames == int(frames) and patch % int(frames) == 0):
        allowed = [f"{f * mel.FRAME_SHIFT_MS:g}" for f in range(1, patch + 1) if patch % f == 0]
        raise ValueError(
            f"timestamp_hop_ms={hop_ms}: must be a multiple of the {mel.FRAME_SHIFT_MS:g} ms "
            f"frame shift that divides the {patch}-frame patch width: one of {allowed} ms"
        )
    return int(frames)


def _is_torch(value: Any) -> bool:
    return type(value).__module__.split(".")[0] == "torch"


def _waveforms(audio: Any, model: HearModel) -> list[np.ndarray]:
    """Checks (n_sounds, n_samples) float audio; returns its rows as float32, mean removed."""
    if _is_torch(audio):
        if not audio.is_floating_point():
            raise TypeError(f"audio is a torch {audio.dtype} tensor; expected float in [-1, 1]")
        array = audio.detach().to("cpu").float().numpy()
    else:
        array = np.asarray(audio)
    if array.dtype.kind != "f":
        raise TypeError(
            f"audio has dtype {array.dtype}; expected float samples in [-1, 1] "
            "(divide 16-bit PCM by 32768)"
        )
    if array.ndim != 2:
        raise ValueError(
            f"audio has shape {array.shape}; expected (n_sounds, n_samples) at "
            f"{model.sample_rate} Hz (use audio[None] for one sound)"
        )
    frame_length, _, _ = mel.frame_geometry(model.sample_rate)
    if array.shape[0] == 0:
        raise ValueError("audio holds no sounds (n_sounds = 0)")
    if array.shape[1] < frame_length:
        raise ValueError(
            f"audio has {array.shape[1]} samples per sound; at least one {frame_length}-sample "
            f"({mel.FRAME_LENGTH_MS:g} ms) fbank frame at {model.sample_rate} Hz is needed"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("audio holds NaN or infinite samples")
    rows = []
    for row in array.astype(np.float32, copy=False):
        rows.append(row - row.mean())  # AudioMAE removes each clip's mean, as load_audio does
    return rows


def _like(reference: Any, value: np.ndarray) -> Any:
    """value as the array kind of `reference`: torch (on its device), JAX, or NumPy."""
    if _is_torch(reference):
        import torch

        return torch.from_numpy(np.ascontiguousarray(value)).to(reference.device)
    if isinstance(reference, jax.Array):
        return jnp.asarray(value)
    return value


def _unwrap(model: Any) -> HearModel:
    inner = getattr(model, "hear_model", model)
    if not isinstance(inner, HearModel):
        raise TypeError(f"model is a {type(model).__name__}; expected what hear.load_model returns")
    return inner


@functools.lru_cache(maxsize=None)
def _torch_wrapper_class() -> type:
    """A torch.nn.Module subclass holding a HearModel (built on first use: torch is optional)."""
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "framework='torch' needs PyTorch: pip install 'uamix-jax[torch]'"
        ) from error

    class TorchHearModel(torch.nn.Module):
        """hear-eval-kit's required torch module type around a JAX HearModel (no parameters)."""

        def __init__(self, hear_model: HearModel):
            super().__init__()
            self.hear_model = hear_model
            self.sample_rate = hear_model.sample_rate
            self.scene_embedding_size = hear_model.scene_embedding_size
            self.timestamp_embedding_size = hear_model.timestamp_embedding_size

    return TorchHearModel
