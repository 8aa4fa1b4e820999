"""Writers of tiny data-set folders in each layout the builders read (0.5 s clips)."""

import csv
import json
import os

import numpy as np
import soundfile

from uamix_jax.data.builders import speech_commands

RATE = 16000
CLIP_SAMPLES = RATE // 2


def write_clip(path: str, seed: int, samples: int = CLIP_SAMPLES, rate: int = RATE) -> None:
    """A distinct 16-bit tone + noise clip, so every file decodes to different samples."""
    rng = np.random.default_rng(seed)
    time = np.arange(samples) / rate
    tone = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 3000) * time)
    clip = tone + 0.05 * rng.standard_normal(samples)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, clip.astype(np.float32), rate, subtype="PCM_16")


def write_bad_files(folder: str) -> list[str]:
    """An undecodable file, an empty wav and a NaN float wav: the three kinds of bad input."""
    os.makedirs(folder, exist_ok=True)
    garbage, empty, nan = (
        os.path.join(folder, name) for name in ("garbage.wav", "empty.wav", "nan.wav")
    )
    with open(garbage, "wb") as file:
        file.write(b"not audio at all")
    soundfile.write(empty, np.zeros(0, np.float32), RATE)
    soundfile.write(nan, np.full(RATE // 4, np.nan, np.float32), RATE, subtype="FLOAT")
    return [garbage, empty, nan]


def write_folder(root: str, classes=("bird", "dog", "rain"), per_class: int = 4) -> None:
    for class_index, name in enumerate(classes):
        for clip in range(per_class):
            write_clip(os.path.join(root, name, f"{name}_{clip}.wav"), 100 * class_index + clip)


def write_esc50(root: str, per_fold: int = 2) -> list[dict]:
    """2 clips per fold at 44.1 kHz (ESC-50's rate), classes cycling over 3 categories."""
    categories = ["dog", "rooster", "pig"]
    rows = []
    for fold in range(1, 6):
        for clip in range(per_fold):
            target = (fold + clip) % len(categories)
            filename = f"{fold}-{clip}-A-{target}.wav"
            write_clip(
                os.path.join(root, "audio", filename),
                10 * fold + clip,
                samples=44100 // 2,
                rate=44100,
            )
            rows.append(
                {
                    "filename": filename,
                    "fold": fold,
                    "target": target,
                    "category": categories[target],
                    "esc10": "False",
                    "src_file": str(clip),
                    "take": "A",
                }
            )
    os.makedirs(os.path.join(root, "meta"), exist_ok=True)
    with open(os.path.join(root, "meta", "esc50.csv"), "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


AUDIOSET_CLASSES = [
    ("/m/09x0r", "Speech"),
    ("/m/05zppz", "Male speech"),
    ("/m/04rlf", "Music"),
    ("/m/0jbk", "Animal"),
]


def write_audioset(root: str) -> dict[str, list[dict]]:
    """Manifests with multi-label items; wav paths relative to root (and one absolute)."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "class_labels_indices.csv"), "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["index", "mid", "display_name"])
        writer.writerows([index, mid, name] for index, (mid, name) in enumerate(AUDIOSET_CLASSES))
    label_sets = [("/m/09x0r", "/m/05zppz"), ("/m/04rlf",), ("/m/0jbk", "/m/04rlf", "/m/09x0r")]
    manifests = {}
    for number, (manifest, count) in enumerate(
        (("balanced_train", 3), ("unbalanced_train", 2), ("eval", 2))
    ):
        items = []
        for clip in range(count):
            relative = f"audio/{manifest}/{clip}.wav"
            write_clip(os.path.join(root, relative), 10 * number + clip)
            wav = os.path.abspath(os.path.join(root, relative)) if clip == 0 else relative
            items.append({"wav": wav, "labels": ",".join(label_sets[clip % 3])})
        manifests[manifest] = items
        with open(os.path.join(root, f"{manifest}.json"), "w") as file:
            json.dump({"data": items}, file)
    return manifests


# The archive's word folders are data, not logic, so the fixture takes the builder's list; the
# tests still pin its size (35) and the words they name.
SPC_WORDS = speech_commands.WORDS


def write_speech_commands(root: str, noise_seconds: int = 10, words=SPC_WORDS) -> None:
    """Two clips per word: speaker a in train; speaker b of 'yes' and 'cat' in validation,
    of 'no' and 'dog' in test; one noise file of noise_seconds for _silence_."""
    for index, word in enumerate(words):
        for speaker in ("a", "b"):
            write_clip(
                os.path.join(root, word, f"{speaker}_nohash_0.wav"), 2 * index + (speaker == "b")
            )
    with open(os.path.join(root, "validation_list.txt"), "w") as file:
        file.write("yes/b_nohash_0.wav\ncat/b_nohash_0.wav\n")
    with open(os.path.join(root, "testing_list.txt"), "w") as file:
        file.write("no/b_nohash_0.wav\ndog/b_nohash_0.wav\n")
    write_clip(
        os.path.join(root, "_background_noise_", "white_noise.wav"),
        999,
        samples=noise_seconds * RATE,
    )


def write_audioset_as20k(
    root: str, train_clips: int = 8, eval_clips: int = 2, seconds: float = 10.0
) -> None:
    """What the AS-20K config reads of an AudioSet folder: class_labels_indices.csv,
    balanced_train.json and eval.json, over `seconds`-long wavs (AudioSet's clips are 10 s)
    under audio/, each labelled with one to three of AUDIOSET_CLASSES."""
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "class_labels_indices.csv"), "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["index", "mid", "display_name"])
        writer.writerows([index, mid, name] for index, (mid, name) in enumerate(AUDIOSET_CLASSES))
    mids = [mid for mid, _ in AUDIOSET_CLASSES]
    for number, (manifest, count) in enumerate(
        (("balanced_train", train_clips), ("eval", eval_clips))
    ):
        items = []
        for clip in range(count):
            relative = f"audio/{manifest}/Y{clip:05d}.wav"
            write_clip(os.path.join(root, relative), 1000 * number + clip, int(seconds * RATE))
            labels = [mids[(clip + offset) % len(mids)] for offset in range(1 + clip % 3)]
            items.append({"wav": relative, "labels": ",".join(labels)})
        with open(os.path.join(root, f"{manifest}.json"), "w") as file:
            json.dump({"data": items}, file)
