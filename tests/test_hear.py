"""uamix_jax.hear on a tiny random-init encoder with AudioMAE's 1024-frame windows (and the
shorter 128, 256 and 512-frame ones that short audio is encoded in)."""

import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uamix_jax import audio, embed, hear
from uamix_jax.models import audiomae

RATE = 16000
CONFIG = audiomae.preset("tiny", embed_dim=64, depth=1, num_heads=2, target_length=1024)


def _save(directory, config):
    variables = audiomae.AudioMAEEncoder(config).init(
        jax.random.PRNGKey(0), np.zeros((1, config.target_length, 128), np.float32)
    )
    audiomae.save(directory, config, variables)
    return directory


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("hear") / "ckpt", CONFIG)


@pytest.fixture(scope="module")
def model(checkpoint):
    return hear.load_model(checkpoint, batch_size=4)


def _noise(seconds, seed=0, count=1):
    rng = np.random.RandomState(seed)
    return (0.05 * rng.randn(count, int(round(seconds * RATE)))).astype(np.float32)


def test_model_attributes(model):
    assert model.sample_rate == 16000
    assert model.scene_embedding_size == model.timestamp_embedding_size == 64
    assert model.timestamp_hop_ms == 40.0 and model.window_frames == 1024


def test_scene_of_a_10s_clip_is_the_pooled_embedding(checkpoint, model):
    t = np.arange(10 * RATE) / RATE
    clip = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * np.cos(7 * t)).astype(np.float32)[None]
    scene = hear.get_scene_embeddings(clip, model)
    assert scene.shape == (1, 64) and scene.dtype == np.float32
    # What `python -m uamix_jax.embed` computed before windowing: load_audio's mean removal,
    # clip_features, then the encoder's pooled output, in batches of the same size.
    encoder, variables = audiomae.load(checkpoint)
    features = audio.clip_features(clip[0] - clip[0].mean(), 1024, audio.NORM_STATS["audioset"])
    expected = embed.compute_embeddings(encoder, variables, features[None], batch_size=4)
    np.testing.assert_allclose(scene, expected, atol=1e-6)


@pytest.mark.parametrize("seconds", [0.03, 1.0, 10.0, 10.5, 61.0])
def test_lengths(model, seconds):
    clips = _noise(seconds, count=2)
    embeddings, timestamps = hear.get_timestamp_embeddings(clips, model)
    frames = 1 + (clips.shape[1] - 400) // 160
    count = math.ceil(frames / 4)
    assert count == hear.num_timestamps(clips.shape[1], model)
    assert embeddings.shape == (2, count, 64) and timestamps.shape == (2, count)
    assert embeddings.dtype == timestamps.dtype == np.float32
    assert np.all(np.isfinite(embeddings))
    np.testing.assert_array_equal(timestamps[0], timestamps[1])
    ts = timestamps[0]
    assert np.all(np.diff(ts) > 0)
    # Centres of the audio each column covers: 16 frames (175 ms) from frame 4k when whole.
    duration_ms = 1000 * clips.shape[1] / RATE
    assert 0 < ts[0] and ts[-1] < duration_ms
    whole = (4 * np.arange(count) + 16) <= frames
    np.testing.assert_allclose(ts[whole], 40 * np.arange(count)[whole] + 87.5)
    if frames < 16:
        assert ts[0] == pytest.approx((400 + 160 * (frames - 1)) / 2 / 16)

    scene = hear.get_scene_embeddings(clips, model)
    assert scene.shape == (2, 64) and np.all(np.isfinite(scene))
    assert not np.allclose(scene[0], scene[1])  # different noise, different embeddings


def _masked(encoder, variables, window, length):
    """The padded path with the tokens past `length` frames masked out (as MAE pretraining
    does, through ids_keep): what a window of that length must give. Returns the pooled
    embedding (D,) and the column embeddings (length / 16, D)."""
    keep = np.arange(length // 16 * 8)[None]
    output = encoder.apply(variables, window[None], ids_keep=keep)
    columns = np.asarray(output.tokens)[0, 1:].reshape(length // 16, 8, -1).mean(axis=1)
    return np.asarray(output.pooled)[0], columns


def test_long_scene_is_the_frame_weighted_mean_of_its_windows(checkpoint, model):
    clip = _noise(10.5, seed=3)[0]
    clip = clip - clip.mean()
    scene = hear.get_scene_embeddings(clip[None], model)[0]
    stats = audio.NORM_STATS["audioset"]
    fbank = audio.kaldi_fbank(clip)  # 1048 frames: a full window, then 24 frames
    encoder, variables = audiomae.load(checkpoint)
    first = audio.clip_features(clip, 1024, stats)
    pooled_first = np.asarray(encoder.apply(variables, first[None]).pooled)[0]
    # The last 24 frames are encoded in the shortest window, 128 frames.
    second = audio.normalize(audio.pad_or_crop(fbank[1024:], 1024), stats)
    pooled_second, _ = _masked(encoder, variables, second, 128)
    np.testing.assert_allclose(scene, (1024 * pooled_first + 24 * pooled_second) / 1048, atol=1e-5)


def _reference(checkpoint, clip, length_for):
    """The windowing written out plainly, one window at a time on the padded path: windows
    every 1024 frames, each shifted by 0, 4, 8 and 12 frames for timestamps, padded to 1024
    frames; all passes of window k keep only the tokens of its first
    length_for(real frames of window k) frames.

    Returns the scene embedding, the column embeddings and their first frames, sorted.
    """
    clip = clip - clip.mean()
    fbank = audio.kaldi_fbank(clip)
    frames = fbank.shape[0]
    stats = audio.NORM_STATS["audioset"]
    encoder, variables = audiomae.load(checkpoint)
    pooled, weights, columns, firsts = [], [], [], []
    for base in range(0, frames, 1024):
        length = length_for(min(1024, frames - base))
        for offset in (0, 4, 8, 12):
            start = base + offset
            if start >= frames:
                continue
            window = audio.normalize(audio.pad_or_crop(fbank[start : start + 1024], 1024), stats)
            window_pooled, window_columns = _masked(encoder, variables, window, length)
            for column in range(length // 16):
                if start + 16 * column < frames:
                    columns.append(window_columns[column])
                    firsts.append(start + 16 * column)
            if offset == 0:
                pooled.append(window_pooled)
                weights.append(min(1024, frames - base))
    weights = np.asarray(weights, np.float64)
    scene = weights @ np.asarray(pooled, np.float64) / weights.sum()
    order = np.argsort(firsts, kind="stable")
    return scene, np.asarray(columns)[order], np.asarray(firsts)[order]


def _fitting(real_frames):
    return next(n for n in (128, 256, 512, 1024) if n >= real_frames)


def _samples(frames):
    return 400 + 160 * (frames - 1)  # the fewest samples giving that many fbank frames


def test_window_lengths():
    assert hear.window_lengths(1024, 16, 128) == (128, 256, 512, 1024)
    assert hear.window_lengths(992, 16, 128) == (128, 256, 512, 992)
    assert hear.window_lengths(256, 16, 128) == (128, 256)
    assert hear.window_lengths(64, 16, 128) == (64,)
    assert hear.window_lengths(1024, 16, 1024) == (1024,)
    assert hear.window_lengths(1024, 16, 16) == (16, 32, 64, 128, 256, 512, 1024)
    with pytest.raises(ValueError, match="multiple of the 16-frame patch"):
        hear.window_lengths(1024, 16, 100)
    with pytest.raises(ValueError, match="positive int"):
        hear.window_lengths(1024, 16, 0)


def test_fitting_window(model):
    assert model.window_lengths == (128, 256, 512, 1024)
    fits = [model.fitting_window(n) for n in (1, 98, 128, 129, 256, 500, 513, 1024)]
    assert fits == [128, 128, 128, 256, 256, 512, 1024, 1024]


@pytest.mark.parametrize("frames", [98, 128, 200, 1024, 1048])
def test_windows_fit_the_audio(checkpoint, model, frames):
    """Scene and timestamp embeddings equal the padded path with the tokens past the
    shortest window holding the audio masked out; for 1024 frames, the padded path itself."""
    clip = _noise(_samples(frames) / RATE, seed=frames)
    scene, columns, firsts = _reference(checkpoint, clip[0], _fitting)
    np.testing.assert_allclose(hear.get_scene_embeddings(clip, model)[0], scene, atol=1e-5)
    embeddings, timestamps = hear.get_timestamp_embeddings(clip, model)
    np.testing.assert_allclose(embeddings[0], columns, atol=1e-5)
    np.testing.assert_array_equal(timestamps[0], hear.column_centres_ms(firsts, frames, 16))


def test_full_windows_reproduce_the_padded_path(checkpoint, model):
    """min_window_frames=1024 pads every window to 1024 frames; the fitted windows change
    the embeddings of a short sound (every token attends to the padding) but neither the
    timestamps nor any window that holds 1024 real frames."""
    padded = hear.load_model(checkpoint, batch_size=4, min_window_frames=1024)
    assert padded.window_lengths == (1024,)
    clip = _noise(1.0, seed=7)
    scene, columns, _ = _reference(checkpoint, clip[0], lambda real: 1024)
    np.testing.assert_allclose(hear.get_scene_embeddings(clip, padded)[0], scene, atol=1e-5)
    padded_frames, padded_ts = hear.get_timestamp_embeddings(clip, padded)
    np.testing.assert_allclose(padded_frames[0], columns, atol=1e-5)
    fitted_frames, fitted_ts = hear.get_timestamp_embeddings(clip, model)
    np.testing.assert_array_equal(fitted_ts, padded_ts)
    assert not np.allclose(fitted_frames, padded_frames, atol=1e-3)
    assert not np.allclose(
        hear.get_scene_embeddings(clip, model), hear.get_scene_embeddings(clip, padded), atol=1e-3
    )

    long = _noise(10.5, seed=8)  # 1048 frames: the windows from frame 1024 on are short
    fitted_frames, fitted_ts = hear.get_timestamp_embeddings(long, model)
    padded_frames, padded_ts = hear.get_timestamp_embeddings(long, padded)
    np.testing.assert_array_equal(fitted_ts, padded_ts)
    whole = np.arange(fitted_ts.shape[1]) < 256  # columns from the windows starting before 1024
    np.testing.assert_allclose(fitted_frames[0, whole], padded_frames[0, whole], atol=1e-6)
    assert not np.allclose(fitted_frames[0, ~whole], padded_frames[0, ~whole], atol=1e-3)


@pytest.mark.parametrize("level", ["scene", "timestamp"])
def test_a_stream_of_mixed_lengths(model, level):
    """Sounds of different window lengths, streamed: each result is what the sound gives
    alone, in order, and a sound waiting in a part-filled queue holds back at most
    4 x batch_size finished ones. (Batches of other sizes round differently: 1e-5.)"""
    lengths = [1.0] + [2.5] * 20 + [0.5, 10.5, 3.0]
    waveforms = [_noise(s, seed=i)[0] for i, s in enumerate(lengths)]
    read = []

    def stream():
        for waveform in waveforms:
            read.append(waveform)
            yield waveform

    results = []
    for result in hear.embed_waveforms(stream(), model, level=level):
        results.append((len(read), result))
    assert len(results) == len(waveforms)
    if level == "scene":  # the 1-s sound's one 128-frame window waits for company
        assert results[0][0] == 4 * model.batch_size + 1
    for waveform, (_, result) in zip(waveforms, results):
        if level == "scene":
            alone = hear.get_scene_embeddings(waveform[None], model)[0]
            np.testing.assert_allclose(result, alone, atol=1e-5)
        else:
            alone, alone_ts = hear.get_timestamp_embeddings(waveform[None], model)
            np.testing.assert_allclose(result[0], alone[0], atol=1e-5)
            np.testing.assert_array_equal(result[1], alone_ts[0])


def test_a_click_moves_the_timestamps_around_it(model):
    quiet = _noise(6.0, seed=1) * 0.1
    click = quiet.copy()
    click[0, 3 * RATE : 3 * RATE + 80] += 0.9 * np.hanning(80)  # 5 ms click at 3.0 s
    base, ts = hear.get_timestamp_embeddings(quiet, model)
    moved, _ = hear.get_timestamp_embeddings(click, model)
    change = np.linalg.norm(moved[0] - base[0], axis=-1)
    assert abs(ts[0][np.argmax(change)] - 3000) <= 100
    near = np.abs(ts[0] - 3000) <= 100
    far = np.abs(ts[0] - 3000) >= 500
    assert change[near].min() > 3 * change[far].max()


def test_batch_of_padded_clips_equals_one_at_a_time(checkpoint):
    # 256-frame windows and a batch of 3 windows mix several sounds in one device batch.
    model = hear.load_model(checkpoint, batch_size=3, target_length=256)
    lengths = (0.5, 3.0, 7.3)
    clips = np.zeros((3, int(7.3 * RATE)), np.float32)
    for row, seconds in enumerate(lengths):
        clips[row, : int(seconds * RATE)] = _noise(seconds, seed=row)[0]
    scene = hear.get_scene_embeddings(clips, model)
    frames, timestamps = hear.get_timestamp_embeddings(clips, model)
    for row in range(3):
        alone = clips[row : row + 1]
        one_scene = hear.get_scene_embeddings(alone, model)
        np.testing.assert_allclose(scene[row], one_scene[0], atol=1e-6)
        one_frames, one_ts = hear.get_timestamp_embeddings(alone, model)
        np.testing.assert_allclose(frames[row], one_frames[0], atol=1e-6)
        np.testing.assert_array_equal(timestamps[row], one_ts[0])


def test_finer_hop_interleaves_more_columns(checkpoint, model):
    clip = _noise(2.0, seed=5)
    fine = hear.load_model(checkpoint, batch_size=4, timestamp_hop_ms=20)
    coarse_frames, coarse_ts = hear.get_timestamp_embeddings(clip, model)
    fine_frames, fine_ts = hear.get_timestamp_embeddings(clip, fine)
    assert (fine_ts.shape[1], coarse_ts.shape[1]) == (99, 50)  # 198 frames every 2 or 4
    # The 40 ms columns are the even 20 ms ones: the same windows, the same tokens.
    np.testing.assert_allclose(fine_frames[0, ::2], coarse_frames[0], atol=1e-6)
    np.testing.assert_array_equal(fine_ts[0, ::2], coarse_ts[0])


def test_fc_norm_columns_use_the_pooling_layer_norm(tmp_path):
    config = CONFIG.replace(final_norm="fc_norm", num_classes=5, target_length=256)
    model = hear.load_model(_save(tmp_path / "ft", config), batch_size=8)
    windows = np.random.RandomState(0).randn(8, 256, 128).astype(np.float32)
    output = jax.jit(model.encoder.apply)(model.variables, windows)
    # Pooling is fc_norm(mean of patch tokens); hear's LayerNorm on that mean gives it back.
    mean = output.tokens[:, 1:].mean(axis=1)
    norm = hear._layer_norm(mean, model.variables["params"]["fc_norm"])
    np.testing.assert_allclose(norm, output.pooled, atol=1e-5)
    frames, _ = hear.get_timestamp_embeddings(_noise(3.0), model)
    assert frames.shape == (1, 75, 64) and np.all(np.isfinite(frames))


def test_array_kinds(checkpoint, model):
    clips = _noise(1.0, count=2)
    expected = hear.get_scene_embeddings(clips, model)
    as_jax = hear.get_scene_embeddings(jnp.asarray(clips), model)
    assert isinstance(as_jax, jax.Array)
    np.testing.assert_array_equal(np.asarray(as_jax), expected)

    torch = pytest.importorskip("torch")
    wrapped = hear.load_model(checkpoint, batch_size=4, framework="torch")
    assert isinstance(wrapped, torch.nn.Module) and wrapped.sample_rate == 16000
    assert wrapped.scene_embedding_size == wrapped.timestamp_embedding_size == 64
    wrapped.to("cpu")  # what hear-eval-kit does with a torch model
    with torch.no_grad():
        scene = hear.get_scene_embeddings(torch.from_numpy(clips), wrapped)
        frames, ts = hear.get_timestamp_embeddings(torch.from_numpy(clips), wrapped)
    assert isinstance(scene, torch.Tensor) and scene.dtype == torch.float32
    np.testing.assert_array_equal(scene.numpy(), expected)
    assert tuple(frames.shape) == (2, 25, 64) and tuple(ts.shape) == (2, 25)


def test_bad_input_is_named(model, checkpoint):
    good = _noise(1.0)
    cases = [
        (good[0], ValueError, "expected \\(n_sounds, n_samples\\)"),
        ((good * 32767).astype(np.int16), TypeError, "expected float"),
        (good[:, :399], ValueError, "400-sample"),
        (np.zeros((0, 16000), np.float32), ValueError, "no sounds"),
        (np.where(np.arange(16000) == 5, np.nan, good), ValueError, "NaN"),
    ]
    for audio_in, error, message in cases:
        with pytest.raises(error, match=message):
            hear.get_scene_embeddings(audio_in, model)
    with pytest.raises(TypeError, match="hear.load_model"):
        hear.get_scene_embeddings(good, object())
    with pytest.raises(ValueError, match="timestamp_hop_ms=50"):
        hear.load_model(checkpoint, timestamp_hop_ms=50)
    with pytest.raises(ValueError, match="norm="):
        hear.load_model(checkpoint, norm="librispeech")
    with pytest.raises(ValueError, match="min_window_frames=100"):
        hear.load_model(checkpoint, min_window_frames=100)
    with pytest.raises(ValueError, match="model_file_path"):
        hear.load_model()


def test_from_encoder_and_the_benchmark_harness(checkpoint, model):
    encoder, variables = audiomae.load(checkpoint)
    in_memory = hear.from_encoder(encoder, variables, batch_size=4)
    clip = _noise(1.0)
    np.testing.assert_array_equal(
        hear.get_scene_embeddings(clip, in_memory), hear.get_scene_embeddings(clip, model)
    )
    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "embed_speed.py")
    spec = importlib.util.spec_from_file_location("embed_speed", path)
    embed_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(embed_speed)
    row = embed_speed.time_case(in_memory, "timestamp", sounds=2, seconds=1.0, repetitions=1)
    assert row["audio_s_per_s"] > 0 and row["median_s"] > 0
