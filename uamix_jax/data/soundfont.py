"""NSynth-style notes rendered from SoundFont files (.sf2, .sf3): one class per preset.

A SoundFont is a library of recorded instrument samples with the rules to play them;
NSynth (Engel et al., 2017) was made by rendering single notes of such libraries. The file
is read and each note synthesised by TinySoundFont (the ``tinysoundfont`` wheel: SoundFont 2
with 16-bit samples, SoundFont 3 with Ogg Vorbis samples); this module chooses the notes,
renders them offline, levels them and writes the folder.

    python -m uamix_jax.data.soundfont --soundfont PATH --out DIR [--clips_per_class 40]

writes DIR/<bank>_<program>_<name>/p<key>_v<velocity>.wav (16 kHz mono int16, one folder
per preset: the ``folder`` and ``soundfont`` builders' layout) and DIR/soundfont.json (the
source files' digests, the settings, and each class's preset, General MIDI family, notes).
Without ``--soundfont``, the General MIDI SoundFont that ``pretty-midi`` ships
(TimGM6mb.sf2, 128 programs) is used.

A note is held for ``held`` seconds (key down), then released, and the clip ends at
``seconds``: NSynth's layout is 4 s with 3 s held. Notes are drawn without replacement from
the (key, velocity) pairs of [min_key, max_key] x velocities (NSynth's piano range, 21-108,
by default); ``clips_per_class`` 0 keeps every pair, as NSynth does. A note more than
QUIET_DB below the preset's reference level is passed over: keys outside the preset's
zones render silent, so only the keys it plays are kept. The classes listed in
``seen_classes`` get their own count and velocities (``seen_clips_per_class``,
``seen_velocities``) and, from each of ``extra_soundfonts`` holding the same bank and
program, more notes written as s<k>_p<key>_v<velocity>.wav (k = 1, 2, ... in that list).
Each preset of each file shares one gain that puts its loudest clip at ``PEAK`` (the
velocity dynamics within an instrument stay). The same files, settings and seed give the
same bytes.
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
# Notes are rendered at 3x the output rate, then low-passed and decimated: TinySoundFont
# interpolates samples recorded at 22-44 kHz straight to its output rate, which would alias
# into the 0-8 kHz band at 16 kHz.
OVERSAMPLE = 3
# TinySoundFont keeps a voice's filter memory from one note to the next; each note is first
# played for this many samples (at the render rate) and cut, so that its own onset sets that
# memory and a clip does not depend on the note rendered before it.
PRIMER = 4096
PEAK = 0.9  # the loudest clip of each preset, as a fraction of full scale
SILENT_PEAK = 1e-4  # a reference level quieter than this (before the gain) counts as silent
QUIET_DB = 50.0  # notes this far below the preset's reference note are passed over
METADATA_FILE = "soundfont.json"
DRUM_BANK = 128  # where General MIDI SoundFonts keep their drum kits
DEFAULT_SOUNDFONT_PACKAGE, DEFAULT_SOUNDFONT_NAME = "pretty_midi", "TimGM6mb.sf2"
LIBRARY, LIBRARY_PIN = "tinysoundfont", "tinysoundfont==0.3.7"
# The SoundFont versions TinySoundFont reads: 2.x (16-bit PCM) and 3.x (Ogg Vorbis).
SUPPORTED_MAJOR_VERSIONS = (2, 3)

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


class SoundFontError(ValueError):
    """A SoundFont file that cannot be read, or a preset that cannot be rendered; names both."""


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    bank: int
    program: int

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
            "`pip install pretty-midi` (or `pip install -e .[soundfont]`), or pass a .sf2 or "
            ".sf3 path"
        )
    return path


def _header_version(path: str) -> tuple[int, int]:
    """The (major, minor) version in the file's RIFF 'sfbk' header; SoundFontError if none."""
    try:
        with open(path, "rb") as file:
            head = file.read(4096)
    except OSError as error:
        raise SoundFontError(f"cannot read SoundFont {path}: {error}") from error
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"sfbk":
        raise SoundFontError(f"{path} is not a SoundFont file (no RIFF 'sfbk' header)")
    at = head.find(b"ifil")  # the version chunk opens the INFO list
    if at < 0 or at + 12 > len(head):
        raise SoundFontError(f"{path}: the SoundFont has no version ('ifil') chunk")
    return struct.unpack_from("<HH", head, at + 8)


class SoundFont:
    """A SoundFont file's presets, rendered note by note with TinySoundFont."""

    def __init__(self, path: str):
        self.path = os.fspath(path)
        major, minor = _header_version(self.path)
        if major not in SUPPORTED_MAJOR_VERSIONS:
            raise SoundFontError(
                f"{self.path}: SoundFont version {major}.{minor} is not supported "
                f"(TinySoundFont reads versions {SUPPORTED_MAJOR_VERSIONS})"
            )
        if importlib.util.find_spec(LIBRARY) is None:
            raise SoundFontError(
                f"rendering {self.path} needs the {LIBRARY} package: "
                f"`pip install --no-deps {LIBRARY_PIN}` (its PyAudio requirement is for live "
                "playback only, which is not used)"
            )
        import tinysoundfont

        self._synth = tinysoundfont.Synth(samplerate=SAMPLE_RATE * OVERSAMPLE)
        try:
            self._sfid = self._synth.sfload(self.path)
        except (RuntimeError, tinysoundfont.SoundFontException) as error:
            samples = "Ogg Vorbis" if major == 3 else "16-bit PCM"
            raise SoundFontError(
                f"{self.path}: TinySoundFont cannot load this SoundFont {major}.{minor} "
                f"(truncated or corrupt, or samples other than {samples}): {error}"
            ) from error
        self.presets = []
        for bank in range(DRUM_BANK + 1):
            for program in range(128):
                name = self._synth.sfpreset_name(self._sfid, bank, program)
                if name is not None:
                    self.presets.append(Preset(name.strip(), bank, program))
        self._selected = None

    def preset(self, bank: int, program: int) -> Preset:
        for preset in self.presets:
            if (preset.bank, preset.program) == (bank, program):
                return preset
        raise SoundFontError(f"{self.path}: no preset at bank {bank}, program {program}")

    def _generate(self, n: int) -> np.ndarray:
        """n samples of the synth's output, its stereo pair summed to mono (pan left out)."""
        if n <= 0:
            return np.zeros(0)
        stereo = np.frombuffer(self._synth.generate(n), np.float32).reshape(n, 2)
        return stereo.astype(np.float64).sum(axis=1)

    def render_note(
        self, preset: Preset, key: int, velocity: int, seconds: float, held: float
    ) -> np.ndarray:
        """One note of a preset as float64 mono at SAMPLE_RATE, before any normalisation.

        The key is pressed at ``velocity`` (1-127), released after ``held`` seconds, and the
        clip ends at ``seconds``. Keys that no zone of the preset plays render silent.
        """
        if not (0 <= key <= 127 and 1 <= velocity <= 127):
            raise SoundFontError(f"{self.path}: key {key} / velocity {velocity} out of range")
        rate = SAMPLE_RATE * OVERSAMPLE
        n, held_n = int(round(seconds * rate)), int(round(held * rate))
        if self._selected != preset:
            self._synth.program_select(
                0, self._sfid, preset.bank, preset.program, is_drums=preset.bank == DRUM_BANK
            )
            self._selected = preset
        self._synth.sounds_off()
        self._synth.noteon(0, key, velocity)
        self._generate(PRIMER)
        self._synth.sounds_off()
        self._synth.noteon(0, key, velocity)
        pressed = self._generate(min(held_n, n))
        self._synth.noteoff(0, key)
        released = self._generate(n - pressed.size)
        self._synth.sounds_off()
        return scipy.signal.resample_poly(np.concatenate([pressed, released]), 1, OVERSAMPLE)


def read_soundfont(path: str) -> SoundFont:
    """The SoundFont at path (.sf2 or .sf3), ready to render; SoundFontError if it can't be."""
    return SoundFont(path)


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
    # Class indices (positions in bank-then-program order) rendered with their own count and
    # velocities, and from the extra SoundFonts too: the replay's training programs.
    seen_classes: tuple[int, ...] = ()
    seen_clips_per_class: int = 0  # 0 = every playable (key, velocity) pair
    seen_velocities: tuple[int, ...] = ()  # () = velocities
    extra_soundfonts: tuple[str, ...] = ()  # more notes of the seen classes' presets

    def check(self) -> None:
        if not 0 < self.held <= self.seconds:
            raise ValueError(f"held must be in (0, seconds]; got {self.held} of {self.seconds}")
        if self.seconds < 0.1:
            raise ValueError(f"seconds must be at least 0.1, got {self.seconds}")
        for field in ("clips_per_class", "seen_clips_per_class"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field} must be >= 0, got {getattr(self, field)}")
        for field in ("velocities", "seen_velocities"):
            values = getattr(self, field)
            if (field == "velocities" and not values) or not all(1 <= v <= 127 for v in values):
                raise ValueError(f"{field} must be in 1..127, got {values}")
        if not 0 <= self.min_key <= self.max_key <= 127:
            raise ValueError(
                f"need 0 <= min_key <= max_key <= 127, got {self.min_key}, {self.max_key}"
            )
        if self.extra_soundfonts and not self.seen_classes:
            raise ValueError("extra_soundfonts add notes to seen_classes, which is empty")


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
    soundfont: SoundFont,
    preset: Preset,
    settings: Settings,
    clips_per_class: int | None = None,
    velocities: Sequence[int] | None = None,
) -> tuple[list[tuple[int, int, np.ndarray]], int]:
    """(key, velocity, float32 clip) of each note of a preset's class, normalised together,
    and the number of notes passed over as silent or near-silent.

    The count and velocities default to the settings' evaluation ones. The reference level
    is the loudest of keys spaced an octave apart over the key range, at the top velocity.
    Notes are tried in an order drawn from the seed; one more than QUIET_DB below the
    reference (a key the preset has no zone for, or a high note under a low-pass filter set
    for low notes) is passed over, as its clip would hold little but rounding noise.
    Raises SoundFontError naming the file and preset when its reference level is silent.
    """
    wanted = settings.clips_per_class if clips_per_class is None else clips_per_class
    velocities = tuple(velocities or settings.velocities)
    notes = [
        (key, velocity)
        for key in range(settings.min_key, settings.max_key + 1)
        for velocity in velocities
    ]

    def render(key, velocity):
        clip = soundfont.render_note(preset, key, velocity, settings.seconds, settings.held)
        peak = float(np.max(np.abs(clip))) if np.all(np.isfinite(clip)) else 0.0
        return clip, peak

    probes = list(range(settings.min_key, settings.max_key + 1, 12))
    reference_peak = max(render(key, max(velocities))[1] for key in probes)
    if reference_peak < SILENT_PEAK:
        raise SoundFontError(
            f"{soundfont.path}: {preset.label()} renders keys {probes} silent at velocity "
            f"{max(velocities)} (an empty preset, or one without zones in keys "
            f"{settings.min_key}-{settings.max_key})"
        )
    floor = reference_peak * 10.0 ** (-QUIET_DB / 20.0)
    order = (
        np.random.default_rng([settings.seed, preset.bank, preset.program]).permutation(len(notes))
        if wanted
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


def _existing_file(path: str) -> str:
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise SoundFontError(f"SoundFont {path} does not exist")
    return path


def write_dataset(out_dir: str, soundfont_path: str | None = None, **settings) -> dict:
    """Writes the data set to out_dir (see the module docstring); returns its metadata.

    A folder already holding the same files' data set with the same settings is kept as it
    is (the call returns at once); any other existing content is an error. The clips are
    written to a temporary sibling folder that is renamed when complete.
    """
    config = Settings(**{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})
    config.check()
    soundfont_path = _existing_file(soundfont_path or default_soundfont())
    extra_paths = [_existing_file(path) for path in config.extra_soundfonts]
    config = dataclasses.replace(config, extra_soundfonts=tuple(extra_paths))
    # As stored (JSON lists, not tuples), so it compares equal to a folder's record.
    wanted = json.loads(
        json.dumps(
            {
                "sha256": file_digest(soundfont_path),
                "extra_sha256": [file_digest(path) for path in extra_paths],
                "settings": dataclasses.asdict(config),
            }
        )
    )
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
    presets = chosen_presets(soundfont, config)
    outside = sorted(c for c in config.seen_classes if not 0 <= c < len(presets))
    if outside:
        raise SoundFontError(
            f"{soundfont_path}: seen_classes {outside} lie outside its {len(presets)} classes"
        )
    extras = [read_soundfont(path) for path in extra_paths]
    temporary = out_dir.rstrip(os.sep) + ".partial"
    shutil.rmtree(temporary, ignore_errors=True)
    classes = []
    for index, preset in enumerate(presets):
        folder = os.path.join(temporary, preset.folder)
        os.makedirs(folder)
        seen = index in config.seen_classes
        count, velocities = (
            (config.seen_clips_per_class, config.seen_velocities) if seen else (None, None)
        )
        clips, quiet = render_class(soundfont, preset, config, count, velocities)
        entry = dict(
            folder=preset.folder,
            name=preset.name,
            bank=preset.bank,
            program=preset.program,
            family=preset.family,
            seen=seen,
            notes=[[key, velocity] for key, velocity, _ in clips],
        )
        for key, velocity, clip in clips:
            name = f"p{key:03d}_v{velocity:03d}.wav"
            soundfile.write(os.path.join(folder, name), clip, SAMPLE_RATE, subtype="PCM_16")
        if seen and extras:
            entry["extra_notes"] = []
            for source, extra in enumerate(extras, start=1):
                if all((p.bank, p.program) != (preset.bank, preset.program) for p in extra.presets):
                    continue  # that file has no such program: this class gets none of its notes
                extra_clips, extra_quiet = render_class(
                    extra, extra.preset(preset.bank, preset.program), config, count, velocities
                )
                quiet += extra_quiet
                for key, velocity, clip in extra_clips:
                    name = f"s{source}_p{key:03d}_v{velocity:03d}.wav"
                    soundfile.write(os.path.join(folder, name), clip, SAMPLE_RATE, subtype="PCM_16")
                    entry["extra_notes"].append([source, key, velocity])
        entry["quiet_notes_passed_over"] = quiet
        classes.append(entry)
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


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--soundfont", help="a .sf2 or .sf3 file (default: pretty-midi's TimGM6mb.sf2)"
    )
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
    parser.add_argument(
        "--seen_classes", default="", help="comma-separated class indices with their own count"
    )
    parser.add_argument("--seen_clips_per_class", type=int, default=0)
    parser.add_argument("--seen_velocities", default="", help="default: --velocities")
    parser.add_argument(
        "--extra_soundfonts", default="", help="comma-separated files adding notes to seen classes"
    )
    args = parser.parse_args(argv)
    metadata = write_dataset(
        args.out,
        args.soundfont,
        clips_per_class=args.clips_per_class,
        seconds=args.seconds,
        held=args.held,
        velocities=_ints(args.velocities),
        min_key=args.min_key,
        max_key=args.max_key,
        banks=_ints(args.banks),
        programs=_ints(args.programs),
        drums=args.drums,
        seed=args.seed,
        seen_classes=_ints(args.seen_classes),
        seen_clips_per_class=args.seen_clips_per_class,
        seen_velocities=_ints(args.seen_velocities),
        extra_soundfonts=tuple(p for p in args.extra_soundfonts.split(",") if p),
    )
    clips = sum(len(c["notes"]) + len(c.get("extra_notes", ())) for c in metadata["classes"])
    print(
        f"wrote {clips} clips of {args.seconds} s in {len(metadata['classes'])} classes "
        f"from {metadata['soundfont']} to {args.out}"
    )


if __name__ == "__main__":
    main()
