"""AudioMAE embeddings of audio files, whole-file (scene) or every 40 ms (timestamp).

  python -m uamix_jax.embed --input clips/ --checkpoint ckpt/audiomae_as2m --output out/clips
writes out/clips.npy (N, D) float32 and out/clips.csv (row index, file path), one row per
file in sorted path order. With --level timestamp, out/clips.npy holds every file's
timestamp embeddings one after another and out/clips.csv names each row's file and
timestamp (ms, centre). Files of any length are embedded in windows of at most the
checkpoint's length (shorter audio in shorter windows); uamix_jax.hear (docs/hear.md)
describes the windows, the pooling and the timestamps.

Files that cannot be used (undecodable, empty, NaN/inf, shorter than one 25 ms frame) are
skipped with a message and listed, one JSON object a line, in out/clips.skipped.jsonl;
--strict stops at the first one instead.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import os
import sys
from typing import Iterable, Iterator, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from tqdm import tqdm

from uamix_jax import audio, hear, xla_setup

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
LEVELS = ("scene", "timestamp")


@functools.partial(jax.jit, static_argnums=0)
def _pooled(model: nn.Module, variables, fbank: jax.Array) -> jax.Array:
    return model.apply(variables, fbank).pooled


def padded_batches(fbank: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """(batch, rows) of float32 `fbank` re-cut to `batch_size`, the last batch zero-padded,
    so a jitted encoder compiles once; `rows` is how many of the batch are real."""
    fbank = np.asarray(fbank, np.float32)
    for start in range(0, len(fbank), batch_size):
        chunk = fbank[start : start + batch_size]
        padded = np.zeros((batch_size,) + chunk.shape[1:], np.float32)
        padded[: len(chunk)] = chunk
        yield padded, len(chunk)


def compute_embeddings(
    model: nn.Module, variables, fbanks: Iterable[np.ndarray], batch_size: int
) -> np.ndarray:
    """Pooled features (N, D) of batches of normalised fbanks (B, T, F) (or one (N, T, F) array).

    Batches are re-cut to `batch_size` and the last one zero-padded, so the jitted encoder
    compiles once.
    """
    if isinstance(fbanks, np.ndarray):
        fbanks = [fbanks]
    outputs = []
    for batch in fbanks:
        for padded, count in padded_batches(batch, batch_size):
            outputs.append(np.asarray(_pooled(model, variables, padded))[:count])
    if not outputs:
        raise ValueError("compute_embeddings got no fbanks")
    return np.concatenate(outputs).astype(np.float32)


def find_audio_files(path: str | os.PathLike) -> list[str]:
    """The file itself, or every audio file under a directory (recursively, sorted)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"--input {path} is neither a file nor a directory")
    files = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(path)
        for name in names
        if name.lower().endswith(AUDIO_EXTENSIONS)
    )
    if not files:
        raise FileNotFoundError(f"No audio files ({', '.join(AUDIO_EXTENSIONS)}) under {path}")
    return files


def _load_all(
    files: Sequence[str], strict: bool, kept: list[str], skipped: list[dict[str, str]]
) -> Iterator[np.ndarray]:
    """Waveforms of the files that decode, in order, with a progress bar; the others are
    recorded in `skipped` (path and reason) unless strict, when the first one raises."""
    for path in tqdm(files, desc="embedding", unit="file"):
        try:
            waveform = audio.load_audio(path)
        except audio.AudioLoadError as error:
            if strict:
                raise
            skipped.append({"path": path, "error": str(error)})
            tqdm.write(f"skipped {path}: {error}", file=sys.stderr)
            continue
        kept.append(path)
        yield waveform


@dataclasses.dataclass(frozen=True)
class EmbedReport:
    """What embed_files wrote, and the files it skipped (path and reason)."""

    npy_path: str
    csv_path: str
    skipped_path: str
    num_files: int
    num_rows: int
    skipped: list[dict[str, str]]


def embed_files(
    input_path: str,
    checkpoint: str,
    output_prefix: str,
    batch_size: int = 16,
    target_length: Optional[int] = None,
    norm: str = "audioset",
    level: str = "scene",
    strict: bool = False,
    timestamp_hop_ms: float = hear.DEFAULT_TIMESTAMP_HOP_MS,
) -> EmbedReport:
    """Embeds every decodable audio file at `input_path` (see the module docstring).

    Files that cannot be decoded, are empty, hold NaN/inf or are shorter than one fbank
    frame are skipped and listed in PREFIX.skipped.jsonl; with strict, the first one raises
    audio.AudioLoadError instead. Raises ValueError when no file could be embedded.
    """
    if level not in LEVELS:
        raise ValueError(f"--level {level!r} unknown; choose from {LEVELS}")
    files = find_audio_files(input_path)
    model = hear.load_model(
        checkpoint,
        norm=norm,
        timestamp_hop_ms=timestamp_hop_ms,
        batch_size=batch_size,
        target_length=target_length,
    )
    kept: list[str] = []
    skipped: list[dict[str, str]] = []
    results = list(hear.embed_waveforms(_load_all(files, strict, kept, skipped), model, level))

    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)
    npy_path = f"{output_prefix}.npy"
    csv_path = f"{output_prefix}.csv"
    skipped_path = f"{output_prefix}.skipped.jsonl"
    with open(skipped_path, "w") as f:
        f.writelines(json.dumps(item) + "\n" for item in skipped)
    if not results:
        raise ValueError(
            f"none of the {len(files)} audio files under {input_path} could be embedded; "
            f"reasons in {skipped_path}"
        )
    root = input_path if os.path.isdir(input_path) else os.path.dirname(input_path)
    names = [os.path.relpath(p, root) for p in kept]
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        if level == "scene":
            embeddings = np.stack(results)
            writer.writerow(["index", "file"])
            writer.writerows(enumerate(names))
        else:
            embeddings = np.concatenate([e for e, _ in results])
            writer.writerow(["index", "file", "timestamp_ms"])
            row = 0
            for name, (_, timestamps) in zip(names, results):
                for timestamp in timestamps:
                    writer.writerow([row, name, f"{timestamp:.1f}"])
                    row += 1
    np.save(npy_path, embeddings.astype(np.float32, copy=False))
    return EmbedReport(npy_path, csv_path, skipped_path, len(kept), len(embeddings), skipped)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, help="an audio file or a directory of them")
    parser.add_argument(
        "--checkpoint", required=True, help="an audiomae.save / converter directory"
    )
    parser.add_argument(
        "--output", required=True, help="output prefix: writes PREFIX.npy and PREFIX.csv"
    )
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument(
        "--target_length",
        type=int,
        default=None,
        help="frames per window (default: the checkpoint's, 1024 for AudioSet models)",
    )
    parser.add_argument(
        "--norm", default="audioset", help=f"normalisation stats: {sorted(audio.NORM_STATS)}"
    )
    parser.add_argument(
        "--level",
        default="scene",
        choices=LEVELS,
        help="scene: one vector per file; timestamp: one vector every --timestamp_hop_ms",
    )
    parser.add_argument(
        "--timestamp_hop_ms",
        type=float,
        default=hear.DEFAULT_TIMESTAMP_HOP_MS,
        help="spacing of timestamp embeddings (10, 20, 40, 80 or 160 ms for 16x16 patches)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail on the first unusable file instead of skipping it",
    )
    args = parser.parse_args(argv)
    try:
        report = embed_files(
            args.input,
            args.checkpoint,
            args.output,
            args.batch_size,
            args.target_length,
            args.norm,
            level=args.level,
            strict=args.strict,
            timestamp_hop_ms=args.timestamp_hop_ms,
        )
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if report.skipped:
        print(
            f"skipped {len(report.skipped)} of {report.num_files + len(report.skipped)} files "
            f"(listed with reasons in {report.skipped_path})",
            file=sys.stderr,
        )
    print(
        f"Wrote {report.npy_path} ({report.num_rows} rows from {report.num_files} files) "
        f"and {report.csv_path}"
    )
    return 0


if __name__ == "__main__":
    xla_setup.set_cpu_xla_flags()  # main.py's XLA:CPU flags; JAX has not started a backend yet
    sys.exit(main())
