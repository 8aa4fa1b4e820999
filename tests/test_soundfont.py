"""SoundFont notes: the .sf2 reader and renderer, the generated folder, its builder, bad input."""

import hashlib
import json
import os
import struct

import numpy as np
import pytest
import soundfile
import tensorflow_datasets as tfds

from uamix_jax.data import builders, soundfont

RATE = 16000
TONE_HZ = 400.0  # 40-sample period at 16 kHz: a loop of whole periods
TONE_ROOT = 67  # the sample's recorded key (400 Hz is about G4; exact pitch is not needed)


# --- a minimal SoundFont 2 writer, so the tests need no downloaded file ---------------------


def _chunk(chunk_id: bytes, payload: bytes) -> bytes:
    return chunk_id + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) & 1)


def _list(kind: bytes, *chunks: bytes) -> bytes:
    return _chunk(b"LIST", kind + b"".join(chunks))


def _name(text: str) -> bytes:
    return text.encode()[:19].ljust(20, b"\0")


def write_sf2(path, presets, release_timecents=-1200):
    """A SoundFont with two samples (a looped 400 Hz tone; silence) and three instruments.

    presets: (name, bank, program, instrument) with instrument 0 (the tone), 1 (the silence),
    2 (the tone, near-silent above key 80) or None (a preset with no zone at all).
    """
    tone = 0.5 * np.sin(2 * np.pi * TONE_HZ * np.arange(800) / RATE)
    # Each sample is followed by 46 zero points, as the format asks.
    data = np.concatenate([tone, np.zeros(46), np.zeros(800), np.zeros(46)])
    smpl = (data * 32767).astype("<i2").tobytes()
    shdr = b"".join(
        [
            _name("tone") + struct.pack("<IIIIIBbHH", 0, 800, 0, 800, RATE, TONE_ROOT, 0, 0, 1),
            _name("silence") + struct.pack("<IIIIIBbHH", 846, 1646, 846, 1646, RATE, 60, 0, 0, 1),
            _name("EOS") + struct.pack("<IIIIIBbHH", 0, 0, 0, 0, 0, 0, 0, 0, 0),
        ]
    )
    # Instruments 0 and 1: one zone of sample 0 / 1, looped, with a release envelope.
    # Instrument 2: the tone up to key 80, the tone 144 dB down above it.
    looped = [(soundfont.RELEASE, release_timecents), (soundfont.SAMPLE_MODES, 1)]
    instruments = [
        [looped + [(soundfont.SAMPLE_ID, 0)]],
        [looped + [(soundfont.SAMPLE_ID, 1)]],
        [
            [(soundfont.KEY_RANGE, 0 | 80 << 8)] + looped + [(soundfont.SAMPLE_ID, 0)],
            [(soundfont.KEY_RANGE, 81 | 127 << 8), (soundfont.ATTENUATION, 1440)]
            + looped
            + [(soundfont.SAMPLE_ID, 0)],
        ],
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
            pgen += struct.pack("<HH", soundfont.INSTRUMENT, instrument)
            bag, gen = bag + 1, gen + 1
    phdr += _name("EOP") + struct.pack("<HHHIII", 0, 0, bag, 0, 0, 0)
    pbag += struct.pack("<HH", gen, 0)
    pgen += struct.pack("<HH", 0, 0)
    modulator_end = b"\0" * 10
    body = b"sfbk" + b"".join(
        [
            _list(b"INFO", _chunk(b"ifil", struct.pack("<HH", 2, 1)), _chunk(b"INAM", b"test\0")),
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
    spectrum = np.abs(np.fft.rfft(clip * np.hanning(clip.size)))
    return np.fft.rfftfreq(clip.size, 1 / RATE)[np.argmax(spectrum)]


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# --- reader and renderer --------------------------------------------------------------------


def test_reader_finds_presets_regions_and_families(sf2):
    font = soundfont.read_soundfont(sf2)
    assert [(p.name, p.bank, p.program) for p in font.presets] == [
        (name, bank, program) for name, bank, program, _ in GOOD_PRESETS
    ]
    preset = font.preset(0, 9)
    assert preset.family == "chromatic_percussion" and preset.folder == "000_009_tone_b"
    assert font.preset(128, 0).family == "drums"
    (region,) = preset.regions
    assert region.sample.name == "tone" and region.sample.root_key == TONE_ROOT
    assert region.keys == (0, 127) and region.generators[soundfont.SAMPLE_MODES] == 1


def test_notes_follow_the_key_loop_while_held_and_release(sf2):
    font = soundfont.read_soundfont(sf2)
    preset = font.preset(0, 0)
    root = soundfont.render_note(font, preset, TONE_ROOT, 127, seconds=1.0, held=0.5)
    octave = soundfont.render_note(font, preset, TONE_ROOT + 12, 127, seconds=1.0, held=0.5)
    assert root.shape == (RATE,)
    held = slice(int(0.1 * RATE), int(0.45 * RATE))  # the 800-sample tone keeps looping
    assert abs(_peak_hz(root[held]) - TONE_HZ) < 10
    assert abs(_peak_hz(octave[held]) - 2 * TONE_HZ) < 10
    # A 0.5 s release (-1200 timecents) falls 96 dB in 0.5 s: about -19 dB 0.1 s after release.
    level = np.sqrt(np.mean(root[held] ** 2))
    after = np.sqrt(np.mean(root[int(0.58 * RATE) : int(0.62 * RATE)] ** 2))
    assert 14 < 20 * np.log10(level / after) < 24
    assert np.max(np.abs(root[-400:])) < 1e-3 * np.max(np.abs(root))
    # Softer velocity: quieter (40 log10(127 / v) dB).
    soft = soundfont.render_note(font, preset, TONE_ROOT, 64, seconds=1.0, held=0.5)
    ratio_db = 20 * np.log10(np.max(np.abs(root)) / np.max(np.abs(soft)))
    assert ratio_db == pytest.approx(40 * np.log10(127 / 64), abs=0.3)


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
        assert len(files) == 5
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


def test_near_silent_notes_are_passed_over(tmp_path):
    path = write_sf2(tmp_path / "quiet.sf2", [("Half Quiet", 0, 3, 2)])
    metadata = _write(tmp_path / "out", path, clips_per_class=0, min_key=78, max_key=83)
    (entry,) = metadata["classes"]
    assert entry["notes"] == [[k, v] for k in (78, 79, 80) for v in (64, 127)]
    assert entry["quiet_notes_passed_over"] == 6
    metadata = _write(tmp_path / "some", path, clips_per_class=4, min_key=78, max_key=83)
    assert len(metadata["classes"][0]["notes"]) == 4
    assert all(k <= 80 for k, _ in metadata["classes"][0]["notes"])


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
            "--programs",
            "9",
        ]
    )
    assert "wrote 2 clips of 0.5 s in 1 classes" in capsys.readouterr().out
    assert os.listdir(tmp_path / "cli" / "000_009_tone_b")


# --- bad input ------------------------------------------------------------------------------


def test_missing_and_corrupt_files_are_named(tmp_path, sf2):
    missing = str(tmp_path / "nowhere.sf2")
    with pytest.raises(soundfont.SoundFontError, match="nowhere.sf2"):
        _write(tmp_path / "out", missing)
    garbage = tmp_path / "garbage.sf2"
    garbage.write_bytes(b"definitely not a soundfont")
    with pytest.raises(soundfont.SoundFontError, match="garbage.sf2.*not a SoundFont 2"):
        soundfont.read_soundfont(str(garbage))
    truncated = tmp_path / "truncated.sf2"
    truncated.write_bytes(open(sf2, "rb").read()[:3000])
    with pytest.raises(soundfont.SoundFontError, match="truncated.sf2"):
        soundfont.read_soundfont(str(truncated))
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize(
    "instrument, message", [(None, "plays no note"), (1, "renders keys .* silent")]
)
def test_empty_or_silent_preset_is_named(tmp_path, instrument, message):
    path = write_sf2(tmp_path / "bad.sf2", [("Fine", 0, 0, 0), ("Broken One", 0, 5, instrument)])
    with pytest.raises(
        soundfont.SoundFontError, match=f"bad.sf2.*'Broken One'.*program 5.*{message}"
    ):
        _write(tmp_path / "out", path)
    assert not os.path.exists(tmp_path / "out")


# --- the General MIDI SoundFont pretty-midi ships ---------------------------------------------


def test_pretty_midi_general_midi_soundfont():
    try:
        path = soundfont.default_soundfont()
    except soundfont.SoundFontError:
        pytest.skip("pretty-midi (the [soundfont] extra) is not installed")
    font = soundfont.read_soundfont(path)
    settings = soundfont.Settings()
    presets = soundfont.chosen_presets(font, settings)
    assert [p.program for p in presets] == list(range(128))
    assert {p.family for p in presets} == set(soundfont.GM_FAMILIES[:16])
    for program in (0, 40, 73, 118):  # piano, violin, flute, synth drum: real, distinct notes
        clip = soundfont.render_note(font, font.preset(0, program), 60, 100, 1.0, 0.75)
        assert np.all(np.isfinite(clip)) and np.max(np.abs(clip)) > 0.01
