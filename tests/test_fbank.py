"""Kaldi fbank (NumPy and JAX) against the independent PyTorch reference in kaldi_reference.py."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
import torch
from kaldi_reference import reference_fbank

from uamix_jax import audio
from uamix_jax.audio import mel

SR = 16000
TOLERANCE = 1e-3  # absolute, in log-mel, on bins whose reference value is above FLOOR_LEVEL
FLOOR_LEVEL = -10.0


def _speech_like(rng, n):
    """Glottal pulse train with a pitch contour, two formant resonances and syllabic AM."""
    t = np.arange(n) / SR
    f0 = 120 + 40 * np.sin(2 * np.pi * 1.3 * t)
    pulses = np.diff(np.floor(np.cumsum(f0) / SR), prepend=0.0)
    voiced = pulses + 0.02 * rng.standard_normal(n)
    for formant_hz, bandwidth in ((700, 110), (1200, 150)):
        radius = np.exp(-np.pi * bandwidth / SR)
        resonator = [1.0, -2 * radius * np.cos(2 * np.pi * formant_hz / SR), radius**2]
        voiced = scipy.signal.lfilter([1.0], resonator, voiced)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return 0.1 * voiced * envelope / np.max(np.abs(voiced))


def _signals():
    rng = np.random.default_rng(1234)
    t = np.arange(24_037) / SR
    return {
        "speech_like": _speech_like(rng, 20_000),
        "white_noise": 0.1 * rng.standard_normal(16_000),
        "chirp_odd_length": 0.5 * np.sin(2 * np.pi * (50 * t + 3_900 * t**2 / t[-1])),
        "tone_with_dc": 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05,
        "quiet_noise_one_frame": 1e-3 * rng.standard_normal(401),
        "exactly_one_frame": 0.2 * rng.standard_normal(400),
        "silence": np.zeros(8_000),
    }


SIGNALS = _signals()


def _assert_matches_reference(ours, waveform):
    expected = reference_fbank(torch.from_numpy(waveform.astype(np.float32))).numpy()
    assert ours.shape == expected.shape
    assert np.all(np.isfinite(ours))
    audible = expected > FLOOR_LEVEL
    if audible.any():
        error = np.abs(ours - expected)[audible].max()
        assert error < TOLERANCE, f"max |ours - reference| = {error}"
    return expected


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_numpy_fbank_matches_reference(name):
    waveform = SIGNALS[name]
    ours = audio.kaldi_fbank(waveform)
    assert ours.dtype == np.float32
    assert ours.shape == (1 + (len(waveform) - 400) // 160, 128)
    _assert_matches_reference(ours, waveform)


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_jax_fbank_matches_reference(name):
    waveform = SIGNALS[name]
    ours = np.asarray(audio.kaldi_fbank_jax(waveform[None].astype(np.float32)))[0]
    _assert_matches_reference(ours, waveform)


def test_silence_is_floored_not_infinite():
    silence = np.zeros(4_000, dtype=np.float32)
    expected_floor = np.log(np.finfo(np.float32).eps)
    np.testing.assert_allclose(audio.kaldi_fbank(silence), expected_floor, rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(audio.kaldi_fbank_jax(silence[None])), expected_floor, rtol=1e-6
    )


def test_ten_seconds_give_998_frames():
    assert mel.num_frames(160_000) == 998
    assert audio.kaldi_fbank(np.zeros(160_000)).shape == (998, 128)


def test_too_short_waveform_is_rejected():
    with pytest.raises(ValueError, match="fewer than one 400-sample frame"):
        audio.kaldi_fbank(np.zeros(399))


def test_recipe_changes_exceed_the_tolerance(monkeypatch):
    """The comparison can fail: a periodic instead of symmetric Hann window is caught."""
    waveform = SIGNALS["speech_like"]
    expected = reference_fbank(torch.from_numpy(waveform.astype(np.float32))).numpy()
    periodic = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)).astype(np.float32)
    monkeypatch.setattr(mel, "hann_window", lambda length: periodic)
    error = np.abs(audio.kaldi_fbank(waveform) - expected)[expected > FLOOR_LEVEL].max()
    assert error > 10 * TOLERANCE


def test_jax_batch_equals_per_clip():
    rng = np.random.default_rng(0)
    batch = (0.1 * rng.standard_normal((4, 8_123))).astype(np.float32)
    batched = np.asarray(audio.kaldi_fbank_jax(batch))
    assert batched.shape == (4, 49, 128)
    for clip, features in zip(batch, batched):
        np.testing.assert_allclose(
            features, np.asarray(audio.kaldi_fbank_jax(clip[None]))[0], atol=1e-5
        )
        np.testing.assert_allclose(features, audio.kaldi_fbank(clip), atol=TOLERANCE)


def test_jax_fbank_in_steps_equals_whole_batch():
    batch = (0.1 * np.random.default_rng(3).standard_normal((5, 2_000))).astype(np.float32)
    stepped = audio.kaldi_fbank_jax(batch, clips_per_step=2)  # 2 + 2 + a remainder of 1
    np.testing.assert_allclose(
        np.asarray(stepped), np.asarray(audio.kaldi_fbank_jax(batch)), atol=1e-5
    )


def test_jax_fbank_composes_under_jit_and_grad():
    stats = audio.NORM_STATS["esc50"]

    @jax.jit
    def features(waveforms):
        return audio.normalize(audio.pad_or_crop(audio.kaldi_fbank_jax(waveforms), 64), stats)

    waveforms = jnp.asarray(
        0.1 * np.random.default_rng(1).standard_normal((2, 4_000)), dtype=jnp.float32
    )
    out = features(waveforms)
    assert out.shape == (2, 64, 128) and out.dtype == jnp.float32
    np.testing.assert_allclose(
        np.asarray(out[0]), audio.clip_features(np.asarray(waveforms[0]), 64, stats), atol=1e-3
    )
    gradient = jax.grad(lambda w: features(w).sum())(waveforms)
    assert np.all(np.isfinite(np.asarray(gradient)))


def test_jax_fbank_on_sharded_batch():
    """A batch sharded over the (test-time) 2 CPU devices gives the same features."""
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    batch = (0.1 * np.random.default_rng(2).standard_normal((4, 2_000))).astype(np.float32)
    sharded = np.asarray(audio.kaldi_fbank_jax(jax.device_put(batch, sharding)))
    np.testing.assert_allclose(sharded, np.asarray(audio.kaldi_fbank_jax(batch)), atol=1e-5)


@pytest.mark.skipif(
    not os.environ.get("UAMIX_TORCHAUDIO_KALDI"),
    reason="set UAMIX_TORCHAUDIO_KALDI to torchaudio's compliance/kaldi.py "
    "(see docs/audio.md) to also compare with torchaudio itself",
)
@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_reference_matches_torchaudio_source(name):
    import importlib.util
    import sys
    import types

    # kaldi.py only needs `import torchaudio` for mfcc's DCT; an empty module stands in for it.
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    spec = importlib.util.spec_from_file_location(
        "torchaudio_kaldi", os.environ["UAMIX_TORCHAUDIO_KALDI"]
    )
    kaldi = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kaldi)
    waveform = torch.from_numpy(SIGNALS[name].astype(np.float32))
    torchaudio_fbank = kaldi.fbank(
        waveform[None],
        htk_compat=True,
        sample_frequency=SR,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=128,
        dither=0.0,
        frame_shift=10,
    ).numpy()
    ours = audio.kaldi_fbank(SIGNALS[name])
    audible = torchaudio_fbank > FLOOR_LEVEL
    np.testing.assert_allclose(
        reference_fbank(waveform).numpy()[audible], torchaudio_fbank[audible], atol=TOLERANCE
    )
    np.testing.assert_allclose(ours[audible], torchaudio_fbank[audible], atol=TOLERANCE)
