"""SoundFont notes: rendering through TinySoundFont (pitch, velocity, release, rate,
determinism), .sf3, the generated folder and its builder, bad input, and the replay's
training data holding only its seen programs."""

import hashlib
import io
import json
import os
import struct

import numpy as np
import pytest
import soundfile
import tensorflow_datasets as tfds

pytest.importorskip("tinysoundfont", reason="pip install --no-deps tinysoundfont==0.3.7")

from uamix_jax.data import builders, soundfont  # noqa: E402

RATE = 16000
TONE_HZ = 400.0  # 40-sample period at 16 kHz: a loop of whole periods
TONE_ROOT = 67  # the sample's recorded key (400 Hz is about G4; exact pitch is not needed)
# Generator numbers of the SoundFont 2.04 specification (section 8.1.2) the writer uses.
RELEASE, INSTRUMENT, KEY_RANGE, ATTENUATION, SAMPLE_ID, SAMPLE_MODES = 38, 41, 43, 48, 53, 54


# --- a minimal SoundFont 2/3 writer, so the tests need no downloaded file -------------------


def _chunk(chunk_id: bytes, payload: bytes) -> bytes:
    return chunk_id + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) & 1)


def _list(kind: bytes, *chunks: bytes) -> bytes:
    return _chunk(b"LIST", kind + b"".join(chunks))


def _name(text: str) -> bytes:
    return text.encode()[:19].ljust(20, b"\0")


def _ogg(signal) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, signal, RATE, format="OGG", subtype="VORBIS")
    return buffer.getvalue()


def write_sf2(path, presets, release_timecents=-1200, compressed=False, version=None):
    """A SoundFont with two samples (a looped 400 Hz tone; silence) and four instruments.

    presets: (name, bank, program, instrument) with instrument 0 (the tone), 1 (the silence),
    2 (the tone, near-silent above key 80), 3 (the tone on keys 60-72 only) or None (a
    preset with no zone at all). compressed: a SoundFont 3 whose samples are Ogg Vorbis
    streams (MuseScore's layout: sample addresses are byte offsets into 'smpl', loop points
    frames from the sample's start, sample type flag 0x10). version: the 'ifil' (major,
    minor), (2, 1) or (3, 1) by default.
    """
    tone = 0.5 * np.sin(2 * np.pi * TONE_HZ * np.arange(800) / RATE)
    if compressed:
        streams = [_ogg(tone), _ogg(np.zeros(800))]
        smpl = b"".join(streams)
        first, second = (0, len(streams[0])), (len(streams[0]), len(smpl))
        loops, kind = ((0, 800), (0, 800)), 0x11
    else:
        # Each sample is followed by 46 zero points, as the format asks.
        data = np.concatenate([tone, np.zeros(46), np.zeros(800), np.zeros(46)])
        smpl = (data * 32767).astype("<i2").tobytes()
        first, second = (0, 800), (846, 1646)
        loops, kind = (first, second), 1
    shdr = b"".join(
        [
            _name("tone")
            + struct.pack("<IIIIIBbHH", *first, *loops[0], RATE, TONE_ROOT, 0, 0, kind),
            _name("silence") + struct.pack("<IIIIIBbHH", *second, *loops[1], RATE, 60, 0, 0, kind),
            _name("EOS") + struct.pack("<IIIIIBbHH", 0, 0, 0, 0, 0, 0, 0, 0, 0),
        ]
    )
    version = version or ((3, 1) if compressed else (2, 1))
    # Instruments 0 and 1: one zone of sample 0 / 1, looped, with a release envelope.
    # Instrument 2: the tone up to key 80, the tone 144 dB down above it.
    # Instrument 3: the tone on keys 60-72, nothing elsewhere.
    looped = [(RELEASE, release_timecents), (SAMPLE_MODES, 1)]
    instruments = [
        [looped + [(SAMPLE_ID, 0)]],
        [looped + [(SAMPLE_ID, 1)]],
        [
            [(KEY_RANGE, 0 | 80 << 8)] + looped + [(SAMPLE_ID, 0)],
            [(KEY_RANGE, 81 | 127 << 8), (ATTENUATION, 1440)]
            + looped
            + [(SAMPLE_ID, 0)],
        ],
        [[(KEY_RANGE, 60 | 72 << 8)] + looped + [(SAMPLE_ID, 0)]],
    ]
    inst, ibag, igen = b"", b"", b""
    bags = gens = 0
    for index, zones in enumerate(instruments):
        inst += _name(f"instrument {index}") + struct.pack("<H", bags)
        for zone in zones:
            ibag += struct.pack("<HH", gens, 0)
            igen += b"".join(struct.pack("<HH", op, amount & 0xFFFF) for op, amount in zone)
            bags, gens = bags + 1, gens + len(zone)
    inst += _name("EOI") + struct.pack("<H", bags)
    ibag += struct.pack("<HH", gens, 0)
    igen += struct.pack("<HH", 0, 0)
    phdr, pbag, pgen = b"", b"", b""
    bag = gen = 0
    for name, bank, program, instrument in presets:
        phdr += _name(name) + struct.pack("<HHHIII", program, bank, bag, 0, 0, 0)
        if instrument is not None:
            pbag += struct.pack("<HH", gen, 0)
            pgen += struct.pack("<HH", INSTRUMENT, instrument)
            bag, gen = bag + 1, gen + 1
    phdr += _name("EOP") + struct.pack("<HHHIII", 0, 0, bag, 0, 0, 0)
    pbag += struct.pack("<HH", gen, 0)
    pgen += struct.pack("<HH", 0, 0)
    modulator_end = b"\0" * 10
    body = b"sfbk" + b"".join(
        [
            _list(
                b"INFO", _chunk(b"ifil", struct.pack("<HH", *version)), _chunk(b"INAM", b"test\0")
            ),
            _list(b"sdta", _chunk(b"smpl", smpl)),
            _list(
                b"pdta",
                _chunk(b"phdr", phdr),
                _chunk(b"pbag", pbag),
                _chunk(b"pmod", modulator_end),
                _chunk(b"pgen", pgen),
                _chunk(b"inst", inst),
                _chunk(b"ibag", ibag),
                _chunk(b"imod", modulator_end),
                _chunk(b"igen", igen),
                _chunk(b"shdr", shdr),
            ),
        ]
    )
    with open(path, "wb") as file:
        file.write(b"RIFF" + struct.pack("<I", len(body)) + body)
    return str(path)


GOOD_PRESETS = [("Tone A", 0, 0, 0), ("Tone B", 0, 9, 0), ("Kit", 128, 0, 0)]


@pytest.fixture
def sf2(tmp_path):
    return write_sf2(tmp_path / "test.sf2", GOOD_PRESETS)


def _peak_hz(clip):
    """The spectrum's highest peak, refined by a parabola through its log-magnitude bins."""
    size = 16 * clip.size
    spectrum = np.log(np.abs(np.fft.rfft(clip * np.hanning(clip.size), size)) + 1e-12)
    i = int(np.argmax(spectrum))
    a, b, c = spectrum[i - 1 : i + 2]
    return (i + 0.5 * (a - c) / (a - 2 * b + c)) * RATE / size


def _cents(hz, reference):
    return 1200 * np.log2(hz / reference)


def _rms(clip):
    return float(np.sqrt(np.mean(np.square(clip))))


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


HELD = slice(int(0.1 * RATE), int(0.45 * RATE))  # inside the 0.5 s the key is held


# --- reading and rendering ------------------------------------------------------------------


def test_presets_banks_programs_and_families(sf2):
    font = soundfont.read_soundfont(sf2)
    assert [(p.name, p.bank, p.program) for p in font.presets] == [
        (name, bank, program) for name, bank, program, _ in GOOD_PRESETS
    ]
    preset = font.preset(0, 9)
    assert preset.family == "chromatic_percussion" and preset.folder == "000_009_tone_b"
    assert font.preset(128, 0).family == "drums"
    with pytest.raises(soundfont.SoundFontError, match="test.sf2: no preset at bank 0, program 5"):
        font.preset(0, 5)


def test_pitch_follows_the_key_within_a_few_cents(sf2):
    font = soundfont.read_soundfont(sf2)
    preset = font.preset(0, 0)
    for key in range(TONE_ROOT - 24, TONE_ROOT + 25, 6):
        clip = font.render_note(preset, key, 127, seconds=1.0, held=0.5)
        expected = TONE_HZ * 2 ** ((key - TONE_ROOT) / 12)
        assert abs(_cents(_peak_hz(clip[HELD]), expected)) < 3, key


def test_velocity_release_rate_and_determinism(sf2):
    font = soundfont.read_soundfont(sf2)
    preset = font.preset(0, 0)
    clips = {v: font.render_note(preset, TONE_ROOT, v, seconds=1.0, held=0.5)
             for v in (16, 32, 64, 96, 127)}  # fmt: skip
    assert all(clip.shape == (RATE,) and clip.dtype == np.float64 for clip in clips.values())
    levels = [_rms(clips[v][HELD]) for v in sorted(clips)]
    assert all(b > 1.05 * a for a, b in zip(levels, levels[1:])), levels  # louder, strictly
    # Released at 0.5 s with a 0.5 s release (-1200 timecents): falling, silent at the end.
    loud = clips[127]
    after = [_rms(loud[int(t * RATE) : int(t * RATE) + 800]) for t in (0.55, 0.65, 0.75)]
    assert levels[-1] > after[0] > after[1] > after[2]
    assert 20 * np.log10(levels[-1] / after[2]) > 10
    assert np.max(np.abs(loud[-400:])) < 1e-2 * np.max(np.abs(loud))
    # A note held to the clip's end is not released.
    held = font.render_note(preset, TONE_ROOT, 127, seconds=1.0, held=1.0)
    assert _rms(held[-1600:]) == pytest.approx(levels[-1], rel=0.05)
    # The same note after other notes, and from a second reader: the same samples.
    font.render_note(preset, 90, 20, seconds=0.3, held=0.1)
    again = font.render_note(preset, TONE_ROOT, 127, seconds=1.0, held=0.5)
    other = soundfont.read_soundfont(sf2).render_note(preset, TONE_ROOT, 127, 1.0, 0.5)
    assert np.array_equal(again, loud) and np.array_equal(other, loud)


def test_sf3_with_ogg_vorbis_samples_renders_like_the_sf2(tmp_path, sf2):
    sf3 = write_sf2(tmp_path / "test.sf3", GOOD_PRESETS, compressed=True)
    font, reference = soundfont.read_soundfont(sf3), soundfont.read_soundfont(sf2)
    assert [(p.bank, p.program) for p in font.presets] == [
        (p.bank, p.program) for p in reference.presets
    ]
    for key in (TONE_ROOT - 12, TONE_ROOT, TONE_ROOT + 12):
        clip = font.render_note(font.preset(0, 0), key, 100, 1.0, 0.5)
        expected = reference.render_note(reference.preset(0, 0), key, 100, 1.0, 0.5)
        assert abs(_cents(_peak_hz(clip[HELD]), _peak_hz(expected[HELD]))) < 3
        assert 20 * np.log10(_rms(clip[HELD]) / _rms(expected[HELD])) == pytest.approx(0, abs=1)
    metadata = _write(tmp_path / "out", sf3, programs=(9,))
    assert len(metadata["classes"][0]["notes"]) == 5


# --- the written data set -------------------------------------------------------------------


def _write(out, sf2, **overrides):
    settings = dict(clips_per_class=5, seconds=0.5, held=0.3, velocities=(64, 127), seed=0)
    settings.update(overrides)
    return soundfont.write_dataset(str(out), sf2, **settings)


def test_layout_metadata_and_format(tmp_path, sf2):
    metadata = _write(tmp_path / "out", sf2, drums=True)
    folders = ["000_000_tone_a", "000_009_tone_b", "128_000_kit"]
    assert sorted(os.listdir(tmp_path / "out")) == folders + [soundfont.METADATA_FILE]
    assert [c["folder"] for c in metadata["classes"]] == folders
    assert [c["family"] for c in metadata["classes"]] == ["piano", "chromatic_percussion", "drums"]
    assert metadata["sha256"] == _digest(sf2)
    for entry in metadata["classes"]:
        files = sorted(os.listdir(tmp_path / "out" / entry["folder"]))
        assert files == sorted(f"p{k:03d}_v{v:03d}.wav" for k, v in entry["notes"])
        assert len(files) == 5 and not entry["seen"]
        assert all(21 <= k <= 108 and v in (64, 127) for k, v in entry["notes"])
        peaks = []
        for name in files:
            info = soundfile.info(tmp_path / "out" / entry["folder"] / name)
            assert (info.samplerate, info.channels, info.frames, info.subtype) == (
                RATE,
                1,
                RATE // 2,
                "PCM_16",
            )
            clip, _ = soundfile.read(tmp_path / "out" / entry["folder"] / name)
            peaks.append(np.max(np.abs(clip)))
        assert max(peaks) == pytest.approx(soundfont.PEAK, abs=1e-3)  # one gain per preset
    assert json.load(open(tmp_path / "out" / soundfont.METADATA_FILE)) == metadata


def test_deterministic_from_the_seed_and_cached(tmp_path, sf2):
    first = _write(tmp_path / "a", sf2)
    again = _write(tmp_path / "b", sf2)
    other = _write(tmp_path / "c", sf2, seed=1)
    assert first["classes"] == again["classes"] and first["classes"] != other["classes"]
    for entry in first["classes"]:
        for name in os.listdir(tmp_path / "a" / entry["folder"]):
            assert _digest(tmp_path / "a" / entry["folder"] / name) == _digest(
                tmp_path / "b" / entry["folder"] / name
            )
    # The same call again keeps the folder; other settings are refused, not mixed in.
    stamp = os.path.getmtime(tmp_path / "a" / soundfont.METADATA_FILE)
    assert _write(tmp_path / "a", sf2) == first
    assert os.path.getmtime(tmp_path / "a" / soundfont.METADATA_FILE) == stamp
    with pytest.raises(FileExistsError, match="other settings"):
        _write(tmp_path / "a", sf2, seconds=0.4)


def test_every_playable_note_when_clips_per_class_is_zero(tmp_path, sf2):
    metadata = _write(
        tmp_path / "out", sf2, clips_per_class=0, min_key=60, max_key=63, programs=(0,)
    )
    (entry,) = metadata["classes"]
    assert entry["notes"] == [[k, v] for k in range(60, 64) for v in (64, 127)]


def test_only_the_keys_a_preset_plays_are_kept(tmp_path):
    path = write_sf2(tmp_path / "range.sf2", [("Middle Only", 0, 4, 3)])
    metadata = _write(tmp_path / "out", path, clips_per_class=0, min_key=50, max_key=80)
    (entry,) = metadata["classes"]
    assert entry["notes"] == [[k, v] for k in range(60, 73) for v in (64, 127)]
    assert entry["quiet_notes_passed_over"] == 2 * (31 - 13)


def test_near_silent_notes_are_passed_over(tmp_path):
    path = write_sf2(tmp_path / "quiet.sf2", [("Half Quiet", 0, 3, 2)])
    metadata = _write(tmp_path / "out", path, clips_per_class=0, min_key=78, max_key=83)
    (entry,) = metadata["classes"]
    assert entry["notes"] == [[k, v] for k in (78, 79, 80) for v in (64, 127)]
    assert entry["quiet_notes_passed_over"] == 6
    metadata = _write(tmp_path / "some", path, clips_per_class=4, min_key=78, max_key=83)
    assert len(metadata["classes"][0]["notes"]) == 4
    assert all(k <= 80 for k, _ in metadata["classes"][0]["notes"])


def test_seen_classes_get_their_own_notes_and_the_extra_soundfonts(tmp_path, sf2):
    sf3 = write_sf2(tmp_path / "extra.sf3", [("Other A", 0, 0, 0)], compressed=True)
    metadata = _write(
        tmp_path / "out",
        sf2,
        min_key=60,
        max_key=69,
        seen_classes=(0,),
        seen_clips_per_class=0,
        seen_velocities=(40, 90, 127),
        extra_soundfonts=(sf3,),
    )
    seen, other = metadata["classes"]
    assert seen["seen"] and not other["seen"]
    assert seen["notes"] == [[k, v] for k in range(60, 70) for v in (40, 90, 127)]
    assert seen["extra_notes"] == [[1, k, v] for k in range(60, 70) for v in (40, 90, 127)]
    assert len(other["notes"]) == 5 and "extra_notes" not in other
    assert metadata["extra_sha256"] == [_digest(sf3)]
    files = os.listdir(tmp_path / "out" / seen["folder"])
    assert len(files) == 60 and sum(name.startswith("s1_") for name in files) == 30
    with pytest.raises(soundfont.SoundFontError, match="seen_classes \\[7\\] lie outside"):
        _write(tmp_path / "bad", sf2, seen_classes=(7,))
    with pytest.raises(ValueError, match="extra_soundfonts add notes to seen_classes"):
        _write(tmp_path / "bad", sf2, extra_soundfonts=(sf3,))


def test_builder_gives_preset_labels_and_families(tmp_path, sf2):
    _write(tmp_path / "wavs", sf2, clips_per_class=3)
    report = builders.build(
        "soundfont", manual_dir=str(tmp_path / "wavs"), data_dir=str(tmp_path / "data")
    )
    assert report.num_examples == {"train": 6} and not report.skipped
    info = tfds.builder_from_directory(report.path).info
    assert info.features["label"].names == ["000_000_tone_a", "000_009_tone_b"]
    assert info.features["family"].names == list(soundfont.GM_FAMILIES)
    records = list(tfds.builder_from_directory(report.path).as_data_source(split="train"))
    for record in records:
        folder = record["filename"].decode().split("/")[0]
        assert info.features["label"].names[record["label"]] == folder
        assert soundfont.GM_FAMILIES[record["family"]] == (
            "piano" if folder.endswith("tone_a") else "chromatic_percussion"
        )
        assert record["waveform"].shape == (RATE // 2,)


def test_command_line(tmp_path, sf2, capsys):
    soundfont.main(
        [
            "--soundfont",
            sf2,
            "--out",
            str(tmp_path / "cli"),
            "--clips_per_class",
            "2",
            "--seconds",
            "0.5",
            "--held",
            "0.25",
            "--seen_classes",
            "0",
            "--seen_clips_per_class",
            "3",
        ]
    )
    assert "wrote 5 clips of 0.5 s in 2 classes" in capsys.readouterr().out
    assert len(os.listdir(tmp_path / "cli" / "000_000_tone_a")) == 3
    assert len(os.listdir(tmp_path / "cli" / "000_009_tone_b")) == 2


# --- bad input ------------------------------------------------------------------------------


def test_missing_corrupt_and_unsupported_files_are_named(tmp_path, sf2):
    missing = str(tmp_path / "nowhere.sf2")
    with pytest.raises(soundfont.SoundFontError, match="nowhere.sf2 does not exist"):
        _write(tmp_path / "out", missing)
    garbage = tmp_path / "garbage.sf2"
    garbage.write_bytes(b"definitely not a soundfont")
    with pytest.raises(soundfont.SoundFontError, match="garbage.sf2 is not a SoundFont"):
        soundfont.read_soundfont(str(garbage))
    truncated = tmp_path / "truncated.sf2"
    truncated.write_bytes(open(sf2, "rb").read()[:3000])
    with pytest.raises(soundfont.SoundFontError, match="truncated.sf2: TinySoundFont cannot"):
        soundfont.read_soundfont(str(truncated))
    sf3 = open(write_sf2(tmp_path / "whole.sf3", GOOD_PRESETS, compressed=True), "rb").read()
    (tmp_path / "cut.sf3").write_bytes(sf3[: len(sf3) // 2])
    with pytest.raises(soundfont.SoundFontError, match="cut.sf3: TinySoundFont cannot.*Vorbis"):
        soundfont.read_soundfont(str(tmp_path / "cut.sf3"))
    future = write_sf2(tmp_path / "future.sf2", GOOD_PRESETS, version=(4, 0))
    with pytest.raises(soundfont.SoundFontError, match="future.sf2: SoundFont version 4.0 is not"):
        soundfont.read_soundfont(future)
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("instrument", [None, 1])  # no zone at all; a silent sample
def test_empty_or_silent_preset_is_named(tmp_path, instrument):
    path = write_sf2(tmp_path / "bad.sf2", [("Fine", 0, 0, 0), ("Broken One", 0, 5, instrument)])
    with pytest.raises(
        soundfont.SoundFontError, match="bad.sf2.*'Broken One'.*program 5.*silent"
    ):
        _write(tmp_path / "out", path)
    assert not os.path.exists(tmp_path / "out")


# --- the General MIDI SoundFont pretty-midi ships ---------------------------------------------


def test_pretty_midi_general_midi_soundfont():
    try:
        path = soundfont.default_soundfont()
    except soundfont.SoundFontError:
        pytest.skip("pretty-midi (the [soundfont] extra) is not installed")
    librosa = pytest.importorskip("librosa")
    font = soundfont.read_soundfont(path)
    presets = soundfont.chosen_presets(font, soundfont.Settings())
    assert [p.program for p in presets] == list(range(128))
    assert {p.family for p in presets} == set(soundfont.GM_FAMILIES[:16])
    for program in (24, 40, 80):  # guitar, violin, square lead: real, pitched notes
        preset = font.preset(0, program)
        for key in (48, 60, 72):
            clip = font.render_note(preset, key, 100, 1.0, 0.75)
            # YIN (librosa's, independent of the renderer) over the held part.
            f0 = librosa.yin(clip[1600:11000].astype(np.float32), fmin=40, fmax=2000, sr=RATE)
            expected = 440.0 * 2 ** ((key - 69) / 12)
            assert abs(_cents(np.median(f0), expected)) < 15, (program, key)
        levels = [np.max(np.abs(font.render_note(preset, 60, v, 1.0, 0.75))) for v in (32, 80, 127)]
        assert levels[0] < levels[1] < levels[2]


# --- the replay's training stages read its seen programs only ---------------------------------


def test_replay_training_data_holds_only_seen_program_clips(tmp_path, monkeypatch):
    from configs import replay_soundfont
    from uamix_jax.data import sources
    from uamix_jax.experiments import replay

    config = replay_soundfont.get_config("quick")
    presets = [(f"P{p}", 0, p, 0) for p in replay_soundfont.QUICK_PROGRAMS]
    config.soundfont = write_sf2(tmp_path / "quick.sf2", presets)
    config.notes.update(dict(seconds=0.2, held=0.1))
    workdir = str(tmp_path / "replay")
    metadata = replay.prepare_data(config, workdir)
    seen = set(config.classes.seen)
    counts = [len(c["notes"]) for c in metadata["classes"]]
    assert [c["seen"] for c in metadata["classes"]] == [i in seen for i in range(len(counts))]
    assert all(counts[i] == config.notes.seen_clips_per_class for i in seen)
    assert all(counts[i] == config.notes.clips_per_class for i in range(15) if i not in seen)

    stages = []  # every training stage's config, as the driver hands it to a job

    def fake_stage(name, job, stage_config, directory):
        stages.append((name, stage_config))
        return dict(step=10, loss=0.0, encoder_dir=directory, mae_dir=directory, wall_s=0.0)

    monkeypatch.setattr(replay, "_run_stage", fake_stage)
    monkeypatch.setattr(replay.audiomae, "read_config", lambda directory: None)
    monkeypatch.setattr(replay, "tune_run_flops", lambda *args: 1)
    monkeypatch.setattr(replay, "_pretrain_step_flops", lambda *args: 1)
    replay.train_all(config, workdir)
    assert [name for name, _ in stages][0] == "pretrain" and len(stages) >= 3
    for name, stage_config in stages:
        assert set(stage_config.data.classes) == seen, name
        source, _ = sources.open_source(stage_config.data, stage_config.data.split)
        labels = [int(source[i]["label"]) for i in range(len(source))]
        assert set(labels) <= seen and len(labels) == sum(counts[i] for i in seen), name
