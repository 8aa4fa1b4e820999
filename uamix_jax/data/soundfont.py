"""NSynth-style notes rendered from any SoundFont 2 file: one class per preset, no download.

A SoundFont (.sf2) is a library of recorded instrument samples with the rules to play them;
NSynth (Engel et al., 2017) was made by rendering single notes of such libraries. This module
reads the file itself (RIFF chunks, preset -> instrument -> sample zones, loop points, the
volume envelope, tuning and the low-pass filter) and renders notes with NumPy, so nothing
beyond the project's own dependencies is needed (the ``tinysoundfont`` wheel pulls in
PyAudio, which has no Linux wheel). What is left out: the modulation envelope and LFOs,
chorus, reverb and pan (the two channels of a stereo sample pair are summed to mono).

    python -m uamix_jax.data.soundfont --soundfont PATH --out DIR [--clips_per_class 40]

writes DIR/<bank>_<program>_<name>/p<key>_v<velocity>.wav (16 kHz mono int16, one folder
per preset: the ``folder`` and ``soundfont`` builders' layout) and DIR/soundfont.json (the
source file's digest, the settings, and each class's preset, General MIDI family, notes).
Without ``--soundfont``, the General MIDI SoundFont that ``pretty-midi`` ships
(TimGM6mb.sf2, 128 programs) is used.

A note is held for ``held`` seconds (key down), then released, and the clip ends at
``seconds``: NSynth's layout is 4 s with 3 s held. Notes are drawn without replacement from
the (key, velocity) pairs the preset can play, key within [min_key, max_key] (NSynth's
piano range, 21-108, by default); ``clips_per_class`` 0 keeps every pair, as NSynth does.
A note more than QUIET_DB below the preset's loudest reference note is passed over.
Each preset's clips share one gain that puts its loudest clip at ``PEAK`` (the velocity
dynamics within an instrument stay). The same file, settings and seed give the same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import shutil
import struct
from collections.abc import Sequence

import numpy as np
import scipy.signal
import soundfile

SAMPLE_RATE = 16000
# Notes are rendered at 3x the output rate, then low-passed and decimated: most samples are
# recorded at 22-44 kHz and would otherwise alias into the 0-8 kHz band.
OVERSAMPLE = 3
PEAK = 0.9  # the loudest clip of each preset, as a fraction of full scale
SILENT_PEAK = 1e-4  # a rendered note quieter than this (before the gain) counts as silent
QUIET_DB = 50.0  # notes this far below the preset's reference note are passed over
METADATA_FILE = "soundfont.json"
DRUM_BANK = 128  # where General MIDI SoundFonts keep their drum kits
DEFAULT_SOUNDFONT_PACKAGE, DEFAULT_SOUNDFONT_NAME = "pretty_midi", "TimGM6mb.sf2"

# General MIDI groups its 128 programs in 16 families of 8; drum kits are a 17th.
GM_FAMILIES = (
    "piano",
    "chromatic_percussion",
    "organ",
    "guitar",
    "bass",
    "strings",
    "ensemble",
    "brass",
    "reed",
    "pipe",
    "synth_lead",
    "synth_pad",
    "synth_effects",
    "ethnic",
    "percussive",
    "sound_effects",
    "drums",
)

# Generator numbers of the SoundFont 2.04 specification (section 8.1.2) that are used here.
START, END, LOOP_START, LOOP_END, START_COARSE = 0, 1, 2, 3, 4
FILTER_FC, FILTER_Q = 8, 9
END_COARSE = 12
DELAY, ATTACK, HOLD, DECAY, SUSTAIN, RELEASE = 33, 34, 35, 36, 37, 38
KEY_TO_HOLD, KEY_TO_DECAY = 39, 40
INSTRUMENT, KEY_RANGE, VEL_RANGE = 41, 43, 44
LOOP_START_COARSE, KEYNUM, VELOCITY = 45, 46, 47
ATTENUATION, LOOP_END_COARSE, COARSE_TUNE, FINE_TUNE = 48, 50, 51, 52
SAMPLE_ID, SAMPLE_MODES, SCALE_TUNING, ROOT_KEY = 53, 54, 56, 58
RANGES = (KEY_RANGE, VEL_RANGE)
# The specification's defaults of every generator that is not 0 by default.
DEFAULTS = {
    FILTER_FC: 13500,
    DELAY: -12000,
    ATTACK: -12000,
    HOLD: -12000,
    DECAY: -12000,
    RELEASE: -12000,
    SCALE_TUNING: 100,
    ROOT_KEY: -1,
    KEYNUM: -1,
    VELOCITY: -1,
}
# Generators a preset zone may not set (sample addresses, modes, fixed keys; section 8.1.3).
INSTRUMENT_ONLY = {0, 1, 2, 3, 4, 12, 45, 46, 47, 50, 54, 57, 58}
SILENT_DB = 96.0  # the specification's full-scale attenuation: an envelope reaching it ends


class SoundFontError(ValueError):
    """A .sf2 file that cannot be read, or a preset that cannot be rendered; names both."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """A sample header: indices into the file's sample data, loop points, pitch."""

    name: str
    start: int
    end: int
    loop_start: int
    loop_end: int
    rate: int
    root_key: int
    correction: int  # cents


@dataclasses.dataclass(frozen=True)
class Region:
    """One playable zone of a preset: its key/velocity ranges, generators and sample."""

    keys: tuple[int, int]
    velocities: tuple[int, int]
    generators: dict[int, int]
    sample: Sample

    def plays(self, key: int, velocity: int) -> bool:
        return (
            self.keys[0] <= key <= self.keys[1]
            and self.velocities[0] <= velocity <= self.velocities[1]
        )


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    bank: int
    program: int
    regions: tuple[Region, ...]

    @property
    def family(self) -> str:
        return GM_FAMILIES[-1] if self.bank == DRUM_BANK else GM_FAMILIES[self.program // 8]

    @property
    def folder(self) -> str:
        """The class folder's name: bank and program first, so sorted order is GM order."""
        slug = re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_") or "preset"
        return f"{self.bank:03d}_{self.program:03d}_{slug}"

    def label(self) -> str:
        return f"preset {self.name!r} (bank {self.bank}, program {self.program})"


@dataclasses.dataclass
class SoundFont:
    """The presets of a .sf2 file and its 16-bit sample data (as float32 in [-1, 1))."""

    path: str
    presets: list[Preset]
    data: np.ndarray

    def preset(self, bank: int, program: int) -> Preset:
        for preset in self.presets:
            if (preset.bank, preset.program) == (bank, program):
                return preset
        raise SoundFontError(f"{self.path}: no preset at bank {bank}, program {program}")


def default_soundfont() -> str:
    """The path of TimGM6mb.sf2 inside the installed ``pretty-midi`` package."""
    spec = importlib.util.find_spec(DEFAULT_SOUNDFONT_PACKAGE)  # locates without importing
    path = (
        os.path.join(list(spec.submodule_search_locations)[0], DEFAULT_SOUNDFONT_NAME)
        if spec and spec.submodule_search_locations
        else None
    )
    if not path or not os.path.isfile(path):
        raise SoundFontError(
            f"no --soundfont given and {DEFAULT_SOUNDFONT_NAME} was not found: install it with "
            "`pip install pretty-midi` (or `pip install -e .[soundfont]`), or pass a .sf2 path"
        )
    return path


# --- reading ------------------------------------------------------------------------------


def _chunks(blob: bytes, start: int, end: int, path: str) -> dict[str, tuple[int, int]]:
    """{chunk id (or LIST type): (data start, data end)} of the RIFF chunks in blob[start:end]."""
    found, offset = {}, start
    while offset + 8 <= end:
        chunk_id = blob[offset : offset + 4].decode("latin-1")
        (size,) = struct.unpack_from("<I", blob, offset + 4)
        data_start, data_end = offset + 8, offset + 8 + size
        if data_end > end:
            raise SoundFontError(f"{path}: chunk {chunk_id!r} runs past the end of the file")
        if chunk_id == "LIST":
            found[blob[data_start : data_start + 4].decode("latin-1")] = (data_start + 4, data_end)
        else:
            found[chunk_id] = (data_start, data_end)
        offset = data_end + (size & 1)  # chunks are padded to even sizes
    return found


def _records(blob: bytes, span: tuple[int, int], fmt: str, name: str, path: str) -> list[tuple]:
    size = struct.calcsize(fmt)
    start, end = span
    if (end - start) % size or end - start < size:
        raise SoundFontError(f"{path}: the {name!r} table is not a whole number of records")
    return [struct.unpack_from(fmt, blob, offset) for offset in range(start, end, size)]


def _zones(bags, generators, first: int, last: int, terminal: int) -> tuple[dict, list[dict]]:
    """(global zone, local zones) of bags [first, last); a zone is {generator: amount}.

    The first zone is global when it lacks the terminal generator (instrument for presets,
    sampleID for instruments); any other zone without it is ignored, as the format says.
    """
    zones = []
    for bag in range(first, last):
        zone = {}
        for operator, amount in generators[bags[bag][0] : bags[bag + 1][0]]:
            if operator in RANGES:
                zone[operator] = (amount & 0xFF, (amount >> 8) & 0xFF)
            else:
                zone[operator] = amount - 0x10000 if amount >= 0x8000 else amount
        zones.append(zone)
    global_zone = zones.pop(0) if zones and terminal not in zones[0] else {}
    return global_zone, [zone for zone in zones if terminal in zone]


def _intersect(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return max(a[0], b[0]), min(a[1], b[1])


def read_soundfont(path: str) -> SoundFont:
    """Parses a SoundFont 2 file into presets of playable regions; SoundFontError if it can't."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as file:
            blob = file.read()
    except OSError as error:
        raise SoundFontError(f"cannot read SoundFont {path}: {error}") from error
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"sfbk":
        raise SoundFontError(f"{path} is not a SoundFont 2 file (no RIFF 'sfbk' header)")
    try:
        return _parse(blob, path)
    except struct.error as error:
        raise SoundFontError(f"{path}: truncated or corrupt SoundFont ({error})") from error


def _parse(blob: bytes, path: str) -> SoundFont:
    top = _chunks(blob, 12, min(len(blob), 8 + struct.unpack_from("<I", blob, 4)[0]), path)
    for needed in ("INFO", "sdta", "pdta"):
        if needed not in top:
            raise SoundFontError(f"{path}: the SoundFont has no {needed!r} list")
    info = _chunks(blob, *top["INFO"], path)
    if "ifil" in info and struct.unpack_from("<H", blob, info["ifil"][0])[0] >= 3:
        raise SoundFontError(f"{path}: SoundFont 3 (compressed samples) is not supported")
    sdta = _chunks(blob, *top["sdta"], path)
    if "smpl" not in sdta:
        raise SoundFontError(f"{path}: the SoundFont holds no sample data ('smpl' chunk)")
    start, end = sdta["smpl"]
    data = np.frombuffer(blob, "<i2", (end - start) // 2, start).astype(np.float32) / 32768.0
    pdta = _chunks(blob, *top["pdta"], path)
    tables = {
        "phdr": "<20sHHHIII",
        "pbag": "<HH",
        "pgen": "<HH",
        "inst": "<20sH",
        "ibag": "<HH",
        "igen": "<HH",
        "shdr": "<20sIIIIIBbHH",
    }
    missing = [name for name in tables if name not in pdta]
    if missing:
        raise SoundFontError(f"{path}: the SoundFont lacks the tables {missing}")
    rows = {name: _records(blob, pdta[name], fmt, name, path) for name, fmt in tables.items()}
    samples = [
        Sample(_name(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in rows["shdr"][:-1]
    ]
    instruments = []
    for index, row in enumerate(rows["inst"][:-1]):
        global_zone, zones = _zones(
            rows["ibag"], rows["igen"], row[1], rows["inst"][index + 1][1], SAMPLE_ID
        )
        instruments.append([{**global_zone, **zone} for zone in zones])
    presets = []
    for index, row in enumerate(rows["phdr"][:-1]):
        name, program, bank = _name(row[0]), row[1], row[2]
        global_zone, zones = _zones(
            rows["pbag"], rows["pgen"], row[3], rows["phdr"][index + 1][3], INSTRUMENT
        )
        regions = []
        for zone in zones:
            preset_zone = {**global_zone, **zone}
            if not 0 <= preset_zone[INSTRUMENT] < len(instruments):
                raise SoundFontError(
                    f"{path}: preset {name!r} (bank {bank}, program {program}) names "
                    f"instrument {preset_zone[INSTRUMENT]}, which does not exist"
                )
            for instrument_zone in instruments[preset_zone[INSTRUMENT]]:
                regions.append(_region(preset_zone, instrument_zone, samples, path, name))
        presets.append(Preset(name, bank, program, tuple(r for r in regions if r is not None)))
    return SoundFont(path, presets, data)


def _name(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1").strip()


def _region(preset_zone, instrument_zone, samples, path, preset_name) -> Region | None:
    """A playable region: instrument values, plus the preset's offsets (ranges intersect)."""
    if not 0 <= instrument_zone[SAMPLE_ID] < len(samples):
        raise SoundFontError(
            f"{path}: preset {preset_name!r} uses sample {instrument_zone[SAMPLE_ID]}, "
            "which does not exist"
        )
    generators = {**DEFAULTS, **instrument_zone}
    for operator, amount in preset_zone.items():
        if operator not in INSTRUMENT_ONLY and operator not in RANGES and operator != INSTRUMENT:
            generators[operator] = generators.get(operator, 0) + amount
    keys = _intersect(
        preset_zone.get(KEY_RANGE, (0, 127)), instrument_zone.get(KEY_RANGE, (0, 127))
    )
    velocities = _intersect(
        preset_zone.get(VEL_RANGE, (0, 127)), instrument_zone.get(VEL_RANGE, (0, 127))
    )
    if keys[0] > keys[1] or velocities[0] > velocities[1]:
        return None
    return Region(keys, velocities, generators, samples[instrument_zone[SAMPLE_ID]])


# --- rendering ----------------------------------------------------------------------------


def _seconds(timecents: float) -> float:
    """Envelope times are timecents: 1200 * log2(seconds); -12000 and below mean 'instant'."""
    return 0.0 if timecents <= -12000 else 2.0 ** (min(timecents, 8000) / 1200.0)


def _envelope(g: dict[int, int], key: int, n: int, held: int, rate: int) -> np.ndarray:
    """The volume envelope's gain per sample: delay, linear attack, hold, decay in dB to the
    sustain level, sustain until the key is released at sample ``held``, release in dB."""
    t = np.arange(n) / rate
    delay, attack = _seconds(g.get(DELAY, 0)), _seconds(g.get(ATTACK, 0))
    hold = _seconds(g.get(HOLD, 0) + g.get(KEY_TO_HOLD, 0) * (60 - key))
    decay = _seconds(g.get(DECAY, 0) + g.get(KEY_TO_DECAY, 0) * (60 - key))
    sustain_db = np.clip(g.get(SUSTAIN, 0), 0, 1440) / 10.0
    release = _seconds(g.get(RELEASE, 0))
    decay_start = delay + attack + hold
    # The decay time is that of a full 96 dB fall; it stops at the sustain level.
    decay_db = np.minimum(
        sustain_db, SILENT_DB * np.maximum(t - decay_start, 0.0) / max(decay, 1e-6)
    )
    gain = 10.0 ** (-decay_db / 20.0)
    if attack > 0:
        gain = np.where(t < delay + attack, np.clip((t - delay) / attack, 0.0, 1.0), gain)
    gain = np.where(t < delay, 0.0, gain)
    if held < n:
        level = gain[held]
        after = t[held:] - t[held]
        fall_db = SILENT_DB * after / max(release, 1e-6)
        gain[held:] = np.where(fall_db >= SILENT_DB, 0.0, level * 10.0 ** (-fall_db / 20.0))
    return gain


def _positions(g, sample: Sample, step: float, n: int, held: int, length: int) -> np.ndarray:
    """Read positions (float, relative to the region's start) of each output sample.

    Sample modes 1 (loop always) and 3 (loop while held, then play on to the end) wrap
    positions past the loop end back into the loop; mode 0 plays the sample once.
    """
    pos = step * np.arange(n)
    loop_start = sample.loop_start + g.get(LOOP_START, 0) + 32768 * g.get(LOOP_START_COARSE, 0)
    loop_end = sample.loop_end + g.get(LOOP_END, 0) + 32768 * g.get(LOOP_END_COARSE, 0)
    start = sample.start + g.get(START, 0) + 32768 * g.get(START_COARSE, 0)
    loop_start, loop_end = loop_start - start, loop_end - start
    mode = g.get(SAMPLE_MODES, 0) & 3
    if mode not in (1, 3) or not 0 <= loop_start < loop_end - 1 or loop_end > length:
        return pos

    def wrap(p):
        return np.where(p >= loop_end, loop_start + (p - loop_start) % (loop_end - loop_start), p)

    if mode == 1 or held >= n:
        return wrap(pos)
    looped = wrap(pos[: held + 1])
    return np.concatenate([looped[:held], looped[held] + step * np.arange(n - held)])


def _lowpass(signal: np.ndarray, g: dict[int, int], rate: int) -> np.ndarray:
    """The zone's static low-pass filter (a resonant biquad) when its cutoff lies in band."""
    cutoff = 8.176 * 2.0 ** (g.get(FILTER_FC, 13500) / 1200.0)
    if cutoff >= 0.5 * SAMPLE_RATE:  # above what the 16 kHz output keeps anyway
        return signal
    q = max(10.0 ** (max(g.get(FILTER_Q, 0), 0) / 200.0), 1 / np.sqrt(2))
    w0 = 2 * np.pi * cutoff / rate
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 - np.cos(w0), 2 * (1 - np.cos(w0)), 1 - np.cos(w0)]) / 2
    a = np.array([1 + alpha, -2 * np.cos(w0), 1 - alpha])
    return scipy.signal.lfilter(b / a[0], a / a[0], signal)


def render_note(
    soundfont: SoundFont, preset: Preset, key: int, velocity: int, seconds: float, held: float
) -> np.ndarray:
    """One note of a preset as float64 mono at SAMPLE_RATE, before any normalisation.

    Every region whose key and velocity ranges hold the note sounds: its sample is read at
    the pitch ratio of the note to the sample's root key (with the zone's tuning), looped as
    its sample mode says, shaped by the volume envelope and attenuated by the zone's
    attenuation plus the velocity's (40 log10(127 / velocity) dB, the usual MIDI curve).
    """
    rate = SAMPLE_RATE * OVERSAMPLE
    n, held_n = int(round(seconds * rate)), int(round(held * rate))
    out = np.zeros(n)
    for region in preset.regions:
        if not region.plays(key, velocity):
            continue
        g, sample = region.generators, region.sample
        start = sample.start + g.get(START, 0) + 32768 * g.get(START_COARSE, 0)
        end = sample.end + g.get(END, 0) + 32768 * g.get(END_COARSE, 0)
        start, end = max(start, 0), min(end, soundfont.data.size)
        if end - start < 2 or sample.rate <= 0:
            continue
        data = soundfont.data[start:end]
        root = g[ROOT_KEY] if g.get(ROOT_KEY, -1) >= 0 else sample.root_key
        root = root if 0 <= root <= 127 else 60
        note = g[KEYNUM] if g.get(KEYNUM, -1) >= 0 else key
        cents = (
            (note - root) * g.get(SCALE_TUNING, 100)
            + 100 * g.get(COARSE_TUNE, 0)
            + g.get(FINE_TUNE, 0)
            + sample.correction
        )
        step = 2.0 ** (cents / 1200.0) * sample.rate / rate
        pos = _positions(g, sample, step, n, held_n, data.size)
        inside = pos < data.size - 1
        index = np.minimum(pos.astype(np.int64), data.size - 2)
        frac = pos - index
        voice = np.where(inside, data[index] * (1 - frac) + data[index + 1] * frac, 0.0)
        attenuation_db = np.clip(g.get(ATTENUATION, 0), 0, 1440) / 10.0 + 40.0 * np.log10(
            127.0 / max(velocity, 1)
        )
        voice *= _envelope(g, key, n, held_n, rate) * 10.0 ** (-attenuation_db / 20.0)
        out += _lowpass(voice, g, rate)
    return scipy.signal.resample_poly(out, 1, OVERSAMPLE)


def playable_notes(
    preset: Preset, velocities: Sequence[int], min_key: int, max_key: int
) -> list[tuple[int, int]]:
    """(key, velocity) pairs in [min_key, max_key] x velocities that some region plays."""
    return [
        (key, velocity)
        for key in range(min_key, max_key + 1)
        for velocity in velocities
        if any(region.plays(key, velocity) for region in preset.regions)
    ]


# --- the data set -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that decides the written clips (recorded in soundfont.json)."""

    clips_per_class: int = 40  # 0 = every playable (key, velocity) pair
    seconds: float = 4.0
    held: float = 3.0
    velocities: tuple[int, ...] = (25, 50, 75, 100, 127)
    min_key: int = 21
    max_key: int = 108
    banks: tuple[int, ...] = (0,)
    programs: tuple[int, ...] = ()  # () = every program of those banks
    drums: bool = False  # also the drum kits (bank 128), keys over the same range
    seed: int = 0

    def check(self) -> None:
        if not 0 < self.held <= self.seconds:
            raise ValueError(f"held must be in (0, seconds]; got {self.held} of {self.seconds}")
        if self.seconds < 0.1:
            raise ValueError(f"seconds must be at least 0.1, got {self.seconds}")
        if self.clips_per_class < 0:
            raise ValueError(f"clips_per_class must be >= 0, got {self.clips_per_class}")
        if not self.velocities or not all(1 <= v <= 127 for v in self.velocities):
            raise ValueError(f"velocities must be in 1..127, got {self.velocities}")
        if not 0 <= self.min_key <= self.max_key <= 127:
            raise ValueError(
                f"need 0 <= min_key <= max_key <= 127, got {self.min_key}, {self.max_key}"
            )


def chosen_presets(soundfont: SoundFont, settings: Settings) -> list[Preset]:
    """The presets that become classes, in bank then program order."""
    banks = set(settings.banks) | ({DRUM_BANK} if settings.drums else set())
    presets = sorted(
        (
            p
            for p in soundfont.presets
            if p.bank in banks and (not settings.programs or p.program in settings.programs)
        ),
        key=lambda p: (p.bank, p.program),
    )
    if not presets:
        programs = f", programs {list(settings.programs)}" if settings.programs else ""
        raise SoundFontError(f"{soundfont.path}: no preset in banks {sorted(banks)}{programs}")
    return presets


def render_class(
    soundfont: SoundFont, preset: Preset, settings: Settings
) -> tuple[list[tuple[int, int, np.ndarray]], int]:
    """(key, velocity, float32 clip) of each note of a preset's class, normalised together,
    and the number of notes passed over as near-silent.

    The preset's reference level (the loudest of five keys spread over its range, at their
    highest velocities) must not be silent. Notes are tried in an order drawn from the
    seed; one more than QUIET_DB below that level (e.g. a high note under a low-pass filter
    set for low notes) is passed over, as its clip would hold little but rounding noise.
    Raises SoundFontError naming the file and preset when it has nothing to play in the key
    range or its reference level is silent.
    """
    notes = playable_notes(preset, settings.velocities, settings.min_key, settings.max_key)
    if not notes:
        raise SoundFontError(
            f"{soundfont.path}: {preset.label()} plays no note with keys "
            f"{settings.min_key}-{settings.max_key} at velocities {list(settings.velocities)}"
        )

    def render(key, velocity):
        clip = render_note(soundfont, preset, key, velocity, settings.seconds, settings.held)
        peak = float(np.max(np.abs(clip))) if np.all(np.isfinite(clip)) else 0.0
        return clip, peak

    # The reference: the loudest of five keys spread over the range, each at its top velocity.
    keys = sorted({key for key, _ in notes})
    probes = sorted({keys[round(q * (len(keys) - 1))] for q in (0, 0.25, 0.5, 0.75, 1)})
    reference_peak = max(render(key, max(v for k, v in notes if k == key))[1] for key in probes)
    if reference_peak < SILENT_PEAK:
        raise SoundFontError(
            f"{soundfont.path}: {preset.label()} renders keys {probes} silent at their "
            "highest velocity"
        )
    floor = reference_peak * 10.0 ** (-QUIET_DB / 20.0)
    wanted = settings.clips_per_class or len(notes)
    order = (
        np.random.default_rng([settings.seed, preset.bank, preset.program]).permutation(len(notes))
        if settings.clips_per_class
        else np.arange(len(notes))
    )
    kept, quiet = {}, 0
    for index in order:
        clip, peak = render(*notes[index])
        if peak < floor:
            quiet += 1
            continue
        kept[int(index)] = (*notes[index], clip, peak)
        if len(kept) == wanted:
            break
    gain = PEAK / max(item[3] for item in kept.values())
    clips = [(key, velocity, (clip * gain).astype(np.float32))
             for key, velocity, clip, _ in (kept[i] for i in sorted(kept))]  # fmt: skip
    return clips, quiet


def file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_metadata(out_dir: str) -> dict | None:
    """The soundfont.json of a written data set folder, or None if there is none."""
    path = os.path.join(out_dir, METADATA_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        return json.load(file)


def write_dataset(out_dir: str, soundfont_path: str | None = None, **settings) -> dict:
    """Writes the data set to out_dir (see the module docstring); returns its metadata.

    A folder already holding the same file's data set with the same settings is kept as it
    is (the call returns at once); any other existing content is an error. The clips are
    written to a temporary sibling folder that is renamed when complete.
    """
    config = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})
    config.check()
    soundfont_path = os.path.abspath(soundfont_path or default_soundfont())
    if not os.path.isfile(soundfont_path):
        raise SoundFontError(f"SoundFont {soundfont_path} does not exist")
    digest = file_digest(soundfont_path)
    # As stored (JSON lists, not tuples), so it compares equal to a folder's record.
    wanted = json.loads(json.dumps({"sha256": digest, "settings": dataclasses.asdict(config)}))
    existing = read_metadata(out_dir)
    if existing is not None:
        if {k: existing.get(k) for k in wanted} == wanted:
            return existing
        raise FileExistsError(
            f"{out_dir} holds a data set of another SoundFont or other settings; "
            "remove it or choose another --out"
        )
    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not a SoundFont data set folder")
    soundfont = read_soundfont(soundfont_path)
    temporary = out_dir.rstrip(os.sep) + ".partial"
    shutil.rmtree(temporary, ignore_errors=True)
    classes = []
    for preset in chosen_presets(soundfont, config):
        folder = os.path.join(temporary, preset.folder)
        os.makedirs(folder)
        notes = []
        clips, quiet = render_class(soundfont, preset, config)
        for key, velocity, clip in clips:
            name = f"p{key:03d}_v{velocity:03d}.wav"
            soundfile.write(os.path.join(folder, name), clip, SAMPLE_RATE, subtype="PCM_16")
            notes.append([key, velocity])
        classes.append(
            dict(
                folder=preset.folder,
                name=preset.name,
                bank=preset.bank,
                program=preset.program,
                family=preset.family,
                notes=notes,
                quiet_notes_passed_over=quiet,
            )
        )
    metadata = {
        "soundfont": soundfont_path,
        **wanted,
        "sample_rate": SAMPLE_RATE,
        "families": list(GM_FAMILIES),
        "classes": classes,
    }
    with open(os.path.join(temporary, METADATA_FILE), "w") as file:
        json.dump(metadata, file, indent=1)
    if os.path.isdir(out_dir):
        os.rmdir(out_dir)  # empty, checked above
    os.replace(temporary, out_dir)
    return metadata


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--soundfont", help="a .sf2 file (default: pretty-midi's TimGM6mb.sf2)")
    parser.add_argument("--out", required=True, help="output folder (created; must be new)")
    defaults = Settings()
    parser.add_argument(
        "--clips_per_class",
        type=int,
        default=defaults.clips_per_class,
        help="notes per preset; 0 = every playable (key, velocity)",
    )
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="clip length")
    parser.add_argument(
        "--held",
        type=float,
        default=defaults.held,
        help="seconds the key is held before its release",
    )
    parser.add_argument("--velocities", default=",".join(map(str, defaults.velocities)))
    parser.add_argument("--min_key", type=int, default=defaults.min_key)
    parser.add_argument("--max_key", type=int, default=defaults.max_key)
    parser.add_argument("--banks", default="0", help="comma-separated preset banks")
    parser.add_argument(
        "--programs", default="", help="comma-separated programs to keep (default: all)"
    )
    parser.add_argument("--drums", action="store_true", help="add the drum kits (bank 128)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    metadata = write_dataset(
        args.out,
        args.soundfont,
        clips_per_class=args.clips_per_class,
        seconds=args.seconds,
        held=args.held,
        velocities=tuple(int(v) for v in args.velocities.split(",")),
        min_key=args.min_key,
        max_key=args.max_key,
        banks=tuple(int(b) for b in args.banks.split(",")),
        programs=tuple(int(p) for p in args.programs.split(",") if p),
        drums=args.drums,
        seed=args.seed,
    )
    clips = sum(len(c["notes"]) for c in metadata["classes"])
    print(
        f"wrote {clips} clips of {args.seconds} s in {len(metadata['classes'])} classes "
        f"from {metadata['soundfont']} to {args.out}"
    )


if __name__ == "__main__":
    main()
