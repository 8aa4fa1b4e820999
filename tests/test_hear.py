"""uamix_jax.hear on a tiny random-init encoder with AudioMAE's 1024-frame windows."""

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


def test_long_scene_is_the_frame_weighted_mean_of_its_windows(checkpoint, model):
    clip = _noise(10.5, seed=3)[0]
    clip = clip - clip.mean()
    scene = hear.get_scene_embeddings(clip[None], model)[0]
    encoder, variables = audiomae.load(checkpoint)
    fbank = audio.kaldi_fbank(clip)  # 1048 frames: a full window, then 24 frames + padding
    stats = audio.NORM_STATS["audioset"]
    first = audio.clip_features(clip, 1024, stats)
    second = audio.normalize(audio.pad_or_crop(fbank[1024:], 1024), stats)
    pooled = np.asarray(encoder.apply(variables, np.stack([first, second])).pooled)
    np.testing.assert_allclose(scene, (1024 * pooled[0] + 24 * pooled[1]) / 1048, atol=1e-5)


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
