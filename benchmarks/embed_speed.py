"""Throughput of uamix_jax.hear: seconds of audio embedded per wall-clock second.

    python benchmarks/embed_speed.py [--presets tiny base] [--clips 8x1 4x10]
        [--levels scene timestamp] [--batch_size 16] [--repetitions 2] [--json PATH]
        [--compare_with DIR]

Each preset is a random-init AudioMAE encoder with 1024-frame (10.24 s) windows, built in
memory (weights do not change the cost). A case 'NxS' is one call on N sounds of S seconds of
noise; the whole call is timed: host fbank, windowing, encoder on the default JAX backend
(with main.py's XLA:CPU flags), read-back. The first call of each case compiles the encoder
and is reported separately; the table gives the median of the following calls, as audio
seconds per second (higher is better; above 1 is faster than real time).

--compare_with DIR times another checkout of the project (e.g. a `git worktree` of an older
commit) against this one in the same run: for each preset, this script runs in a subprocess
first with DIR's uamix_jax (PYTHONPATH=DIR), then with this checkout's, and the table gives
both throughputs side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from uamix_jax import hear, xla_setup
from uamix_jax.models import audiomae


def make_model(preset: str, batch_size: int, hop_ms: float) -> hear.HearModel:
    config = audiomae.preset(preset, target_length=1024)
    encoder = audiomae.AudioMAEEncoder(config)
    variables = jax.jit(encoder.init)(
        jax.random.PRNGKey(0), np.zeros((1, 1024, config.num_mel_bins), np.float32)
    )
    return hear.from_encoder(encoder, variables, timestamp_hop_ms=hop_ms, batch_size=batch_size)


def time_case(model: hear.HearModel, level: str, sounds: int, seconds: float, repetitions: int):
    clips = (0.1 * np.random.RandomState(0).randn(sounds, int(seconds * 16000))).astype(np.float32)
    function = hear.get_scene_embeddings if level == "scene" else hear.get_timestamp_embeddings

    def call() -> float:
        start = time.perf_counter()
        jax.block_until_ready(function(clips, model))
        return time.perf_counter() - start

    first = call()
    durations = [call() for _ in range(repetitions)]
    median = float(np.median(durations))
    return {
        "level": level,
        "sounds": sounds,
        "seconds": seconds,
        "first_call_s": round(first, 3),
        "median_s": round(median, 3),
        "audio_s_per_s": round(sounds * seconds / median, 2),
    }


def machine() -> str:
    device = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return f"{device.platform} ({device.device_kind}); host {cpu}, {os.cpu_count()} cores"


def _revision(directory: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", directory, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def compare(args: argparse.Namespace, forwarded: list[str]) -> None:
    """Runs this script per preset on `args.compare_with`'s code, then on this checkout's."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    trees = {"before": os.path.abspath(args.compare_with), "after": here}
    print(
        f"before: {trees['before']} ({_revision(trees['before'])}); "
        f"after: {here} ({_revision(here)})"
    )
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for preset in args.presets:
            for label, tree in trees.items():
                path = os.path.join(scratch, f"{preset}-{label}.json")
                env = {**os.environ, "PYTHONPATH": tree}
                command = [sys.executable, os.path.abspath(__file__), "--presets", preset]
                subprocess.run(command + forwarded + ["--json", path], env=env, check=True)
                with open(path) as f:
                    result = json.load(f)
                for row in result["rows"]:
                    rows.append({**row, "code": label, "revision": _revision(tree)})
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(
        "| preset | level | sounds x seconds | before: audio s / s | after: audio s / s "
        "| after / before |"
    )
    print("|---|---|---|---|---|---|")

    def key(row: dict) -> tuple:
        return row["preset"], row["level"], row["sounds"], row["seconds"]

    before = {key(r): r for r in rows if r["code"] == "before"}
    for row in rows:
        if row["code"] == "after" and key(row) in before:
            old = before[key(row)]["audio_s_per_s"]
            print(
                f"| {row['preset']} | {row['level']} | {row['sounds']} x {row['seconds']:g} | "
                f"{old} | {row['audio_s_per_s']} | {row['audio_s_per_s'] / old:.2f} |"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "rows": rows}, f, indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "base"])
    parser.add_argument("--clips", nargs="+", default=["8x1", "4x10"], help="NxSECONDS")
    parser.add_argument("--levels", nargs="+", default=["scene", "timestamp"])
    parser.add_argument("--batch_size", type=int, default=hear.DEFAULT_BATCH_SIZE)
    parser.add_argument("--timestamp_hop_ms", type=float, default=hear.DEFAULT_TIMESTAMP_HOP_MS)
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument(
        "--compare_with", default=None, help="a checkout of the project to time first"
    )
    args = parser.parse_args()
    if args.compare_with:
        forwarded = ["--clips", *args.clips, "--levels", *args.levels]
        forwarded += ["--batch_size", str(args.batch_size), "--repetitions", str(args.repetitions)]
        forwarded += ["--timestamp_hop_ms", str(args.timestamp_hop_ms)]
        compare(args, forwarded)
        return
    xla_setup.set_cpu_xla_flags()  # before JAX starts a backend, as main.py does

    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}; code {hear.__file__}")
    print("| preset | level | sounds x seconds | first call (s) | median call (s) | audio s / s |")
    print("|---|---|---|---|---|---|")
    rows = []
    for preset in args.presets:
        model = make_model(preset, args.batch_size, args.timestamp_hop_ms)
        for clip in args.clips:
            sounds, seconds = clip.split("x")
            for level in args.levels:
                row = time_case(model, level, int(sounds), float(seconds), args.repetitions)
                row["preset"] = preset
                rows.append(row)
                print(
                    f"| {preset} | {level} | {row['sounds']} x {row['seconds']:g} | "
                    f"{row['first_call_s']} | {row['median_s']} | {row['audio_s_per_s']} |",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
