"""Embedding audio files with a saved encoder: the CLI and compute_embeddings."""

import csv
import json
import os

import jax
import numpy as np
import pytest
import soundfile

from uamix_jax import audio, embed, hear
from uamix_jax.models import audiomae

CONFIG = audiomae.preset("tiny", embed_dim=64, depth=1, num_heads=2, target_length=256)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("encoder") / "ckpt"
    variables = audiomae.AudioMAEEncoder(CONFIG).init(
        jax.random.PRNGKey(0), np.zeros((1, 256, 128), np.float32)
    )
    audiomae.save(directory, CONFIG, variables)
    return directory


def _write_clips(folder):
    """Three short tones at two sample rates (one in a sub-folder), 16-bit wav."""
    rng = np.random.RandomState(0)
    clips = {
        "a.wav": (16000, 440.0, 1.0),
        "b.wav": (22050, 1000.0, 0.7),
        "sub/c.wav": (16000, 3000.0, 1.5),
    }
    for name, (rate, hz, seconds) in clips.items():
        t = np.arange(int(rate * seconds)) / rate
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(
            path,
            0.3 * np.sin(2 * np.pi * hz * t) + 0.01 * rng.randn(t.size),
            rate,
            subtype="PCM_16",
        )
    return sorted(clips)


def test_embed_cli_writes_embeddings_and_file_names(tmp_path, checkpoint):
    names = _write_clips(tmp_path / "clips")
    prefix = tmp_path / "out" / "emb"
    assert (
        embed.main(
            [
                "--input",
                str(tmp_path / "clips"),
                "--checkpoint",
                str(checkpoint),
                "--output",
                str(prefix),
                "--batch_size",
                "2",
                "--norm",
                "esc50",
            ]
        )
        == 0
    )
    embeddings = np.load(f"{prefix}.npy")
    with open(f"{prefix}.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "file"] and [r[1] for r in rows[1:]] == names
    assert embeddings.shape == (3, 64) and embeddings.dtype == np.float32

    # Same numbers as running the front end and the encoder by hand, one clip at a time,
    # keeping the tokens of the shortest window that holds the clip (uamix_jax.hear: a.wav 98
    # and b.wav 68 frames, 128; c.wav 148 frames, 256).
    model, variables = audiomae.load(checkpoint)
    for row, (name, length) in enumerate(zip(names, (128, 128, 256))):
        fbank = audio.clip_features(
            audio.load_audio(tmp_path / "clips" / name), 256, audio.NORM_STATS["esc50"]
        )
        keep = np.arange(length // 16 * 8)[None]
        expected = np.asarray(model.apply(variables, fbank[None], ids_keep=keep).pooled)[0]
        np.testing.assert_allclose(embeddings[row], expected, atol=1e-5)
    assert len({tuple(e) for e in embeddings.round(4)}) == 3


def test_embed_cli_target_length_and_single_file(tmp_path, checkpoint):
    _write_clips(tmp_path / "clips")
    prefix = tmp_path / "one"
    assert (
        embed.main(
            [
                "--input",
                str(tmp_path / "clips" / "a.wav"),
                "--checkpoint",
                str(checkpoint),
                "--output",
                str(prefix),
                "--target_length",
                "128",
            ]
        )
        == 0
    )
    assert np.load(f"{prefix}.npy").shape == (1, 64)


def test_embed_cli_reports_bad_input(tmp_path, checkpoint, capsys):
    (tmp_path / "empty").mkdir()
    assert (
        embed.main(
            [
                "--input",
                str(tmp_path / "empty"),
                "--checkpoint",
                str(checkpoint),
                "--output",
                str(tmp_path / "x"),
            ]
        )
        == 1
    )
    assert "No audio files" in capsys.readouterr().err
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav")
    assert (
        embed.main(
            [
                "--input",
                str(tmp_path / "broken.wav"),
                "--checkpoint",
                str(checkpoint),
                "--output",
                str(tmp_path / "x"),
            ]
        )
        == 1
    )
    assert "broken.wav" in capsys.readouterr().err


def test_compute_embeddings_rebatches_and_pads(checkpoint):
    model, variables = audiomae.load(checkpoint)
    fbanks = np.random.RandomState(1).randn(5, 256, 128).astype(np.float32)
    expected = np.asarray(model.apply(variables, fbanks).pooled)
    batches = [fbanks[:3], fbanks[3:]]
    np.testing.assert_allclose(
        embed.compute_embeddings(model, variables, batches, batch_size=2), expected, atol=1e-5
    )
    np.testing.assert_allclose(
        embed.compute_embeddings(model, variables, fbanks, batch_size=4), expected, atol=1e-5
    )


def _write_problem_folder(folder):
    """The folder from issue 18: a corrupt, an empty, a NaN, a stereo 44.1 kHz, a 100-sample
    and a good file. Returns (usable names, unusable names), each sorted."""
    folder.mkdir(parents=True)
    rng = np.random.RandomState(2)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    soundfile.write(folder / "empty.wav", np.zeros(0, np.float32), 16000)
    nan = 0.1 * rng.randn(16000).astype(np.float32)
    nan[100] = np.nan
    soundfile.write(folder / "nan.wav", nan, 16000, subtype="FLOAT")
    soundfile.write(folder / "stereo.wav", 0.1 * rng.randn(44100, 2), 44100, subtype="PCM_16")
    soundfile.write(folder / "short.wav", 0.1 * rng.randn(100), 16000, subtype="PCM_16")
    soundfile.write(folder / "good.flac", 0.1 * rng.randn(12000), 16000)
    return ["good.flac", "stereo.wav"], ["corrupt.wav", "empty.wav", "nan.wav", "short.wav"]


def _run(*args):
    return embed.main([str(a) for a in args])


def test_embed_cli_skips_unusable_files_and_lists_them(tmp_path, checkpoint, capsys):
    usable, unusable = _write_problem_folder(tmp_path / "mixed")
    prefix = tmp_path / "out" / "mixed"
    assert _run("--input", tmp_path / "mixed", "--checkpoint", checkpoint, "--output", prefix) == 0
    err = capsys.readouterr().err
    assert "skipped 4 of 6 files" in err and all(name in err for name in unusable)
    with open(f"{prefix}.csv") as f:
        assert [row[1] for row in list(csv.reader(f))[1:]] == usable
    assert np.load(f"{prefix}.npy").shape == (2, 64)
    with open(f"{prefix}.skipped.jsonl") as f:
        skipped = [json.loads(line) for line in f]
    assert [os.path.basename(item["path"]) for item in skipped] == unusable
    reasons = dict(zip(unusable, (item["error"] for item in skipped)))
    assert "cannot decode" in reasons["corrupt.wav"]
    assert "no samples" in reasons["empty.wav"]
    assert "NaN" in reasons["nan.wav"]
    assert "shorter than one 400-sample fbank frame" in reasons["short.wav"]

    # --strict stops at the first unusable file (sorted order) and writes no embeddings.
    strict = tmp_path / "strict"
    arguments = ("--input", tmp_path / "mixed", "--checkpoint", checkpoint, "--output", strict)
    assert _run(*arguments, "--strict") == 1
    assert "corrupt.wav" in capsys.readouterr().err
    assert not os.path.exists(f"{strict}.npy")


def test_embed_cli_fails_when_nothing_is_usable(tmp_path, checkpoint, capsys):
    _write_problem_folder(tmp_path / "bad")
    for name in ("good.flac", "stereo.wav"):
        (tmp_path / "bad" / name).unlink()
    prefix = tmp_path / "none"
    assert _run("--input", tmp_path / "bad", "--checkpoint", checkpoint, "--output", prefix) == 1
    assert "none of the 4 audio files" in capsys.readouterr().err
    assert not os.path.exists(f"{prefix}.npy")
    with open(f"{prefix}.skipped.jsonl") as f:
        assert len(f.readlines()) == 4


def test_embed_cli_levels_match_the_hear_functions_on_long_files(tmp_path, checkpoint):
    """A 7-s and a 1-s file through 2.56-s windows: scene and timestamp rows are what
    uamix_jax.hear gives for the same waveforms."""
    rng = np.random.RandomState(4)
    (tmp_path / "long").mkdir()
    soundfile.write(tmp_path / "long" / "a.wav", 0.1 * rng.randn(7 * 16000), 16000)
    soundfile.write(tmp_path / "long" / "b.wav", 0.1 * rng.randn(16000), 16000)
    model = hear.load_model(checkpoint, batch_size=3)
    waveforms = [audio.load_audio(tmp_path / "long" / n) for n in ("a.wav", "b.wav")]

    common = ("--input", tmp_path / "long", "--checkpoint", checkpoint, "--batch_size", 3)
    scene = tmp_path / "scene"
    assert _run(*common, "--output", scene) == 0
    expected = np.stack([hear.get_scene_embeddings(w[None], model)[0] for w in waveforms])
    np.testing.assert_allclose(np.load(f"{scene}.npy"), expected, atol=1e-6)

    frames = tmp_path / "frames"
    assert _run(*common, "--output", frames, "--level", "timestamp") == 0
    rows = np.load(f"{frames}.npy")
    with open(f"{frames}.csv") as f:
        table = list(csv.reader(f))
    assert table[0] == ["index", "file", "timestamp_ms"] and len(table) - 1 == len(rows)
    start = 0
    for name, waveform in zip(("a.wav", "b.wav"), waveforms):
        embeddings, timestamps = hear.get_timestamp_embeddings(waveform[None], model)
        stop = start + embeddings.shape[1]
        np.testing.assert_allclose(rows[start:stop], embeddings[0], atol=1e-6)
        assert [r[1] for r in table[1 + start : 1 + stop]] == [name] * embeddings.shape[1]
        np.testing.assert_allclose(
            [float(r[2]) for r in table[1 + start : 1 + stop]], timestamps[0], atol=0.05
        )
        start = stop
    assert start == len(rows) == 175 + 25  # ceil(698 / 4) + ceil(98 / 4)
