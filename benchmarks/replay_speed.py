"""The replay's MAE pretraining and tuning steps: this tree against another commit, one run.

    python benchmarks/replay_speed.py --base /tmp/base41029db
    python benchmarks/replay_speed.py --base /tmp/base41029db --rounds 3 --steps 20

Sizes are those of configs/replay_soundfont.py (its `pretrain` and `tune` sub-configs: a
4-block, 128-wide encoder on 96 x 128 fbanks, batch 64; the tuning in its last stage, 2
trainable blocks). Four measurements per tree, each in its own worker process whose
PYTHONPATH is that tree, so every import (uamix_jax, configs) is the tree's own code:

- bare pretraining / tuning step: the job's jitted step on one random batch, timed per step
  after the compile (median and fastest of ``--steps``); compile = the first call.
- pretraining / tuning job: the job's ``run(config, workdir)`` on a synthetic data set of
  3,200 one-second clips stored as fbanks (the replay's seen clips: 80 programs x 40
  notes), once for ``--epochs`` + 2 epochs and once for ``--epochs``, each in a fresh
  workdir; the steady state is the difference in wall time over the difference in steps,
  so start-up, compile and export cancel and what remains is the loop: input pipeline,
  step, host work, logging and checkpoints.

Rounds alternate which tree goes first (interleaved A/B), so a shared machine's load hits
both sides alike. Model FLOPs are `uamix_jax.experiments.replay`'s matmul count (backward
= 2x forward), from the current tree; the machine's matmul rate is peak_flops.py's 4096^3
float32 matmul, measured at the start and at the end.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

PROTOCOL_PREFIX = "@@replay_speed "
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("bare_pretrain", "job_pretrain", "bare_tune", "job_tune")
# The synthetic stand-in for the replay's seen clips (uamix_jax.data.synthetic).
SYNTHETIC = dict(num_classes=16, clips_per_class=200, seconds=1.0)
TUNE_BLOCKS = 2  # the replay's last tuning stage


# --- worker (runs inside the tree under test) --------------------------------------------


def _configs(data_dir: str):
    """The replay's pretraining and tuning configs, reading the synthetic data set."""
    from configs import replay_soundfont

    replay = replay_soundfont.get_config()
    stages = []
    for stage in (replay.pretrain, replay.tune):
        stage.data.update(dict(name="synthetic", builder_config="default_fbank",
                               data_dir=data_dir))  # fmt: skip
        stage.data.synthetic.update(SYNTHETIC)
        stage.checkpoint.every_steps = 200
        stages.append(stage)
    pretrain, tune = stages
    tune.schedule.stages = ((0, TUNE_BLOCKS),)
    return pretrain, tune


def _time_steps(step, state, batch, steps: int) -> dict:
    import jax
    import numpy as np

    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    times = times[1:]  # the second call can still allocate
    return {"median_s": float(np.median(times)), "min_s": min(times), "compile_s": compile_s}


def _bare_pretrain(pretrain, steps: int) -> dict:
    import jax
    import numpy as np

    from uamix_jax.jobs import pretrain as job
    from uamix_jax.pretraining import train_step as pretrain_step
    from uamix_jax.training import optim, runner, sharding

    model, variables = job.starting_point(pretrain)
    batch_size = pretrain.data.batch_size
    tx = optim.make_optimizer(
        pretrain.optim,
        depth=model.config.encoder.depth,
        trainable_blocks=None,
        global_batch=batch_size,
        total_steps=1000,
        head_pattern=job.DECODER_PATTERN,
    )
    mesh = sharding.make_mesh()
    state = sharding.replicate(
        runner.create_state(variables["params"], variables["constants"], tx, jax.random.key(1)),
        mesh,
    )
    step = runner.jit_step(runner.make_step(pretrain_step.make_loss(model, pretrain), tx), mesh)
    enc = model.config.encoder
    fbank = np.random.default_rng(0).standard_normal(
        (batch_size, enc.target_length, enc.num_mel_bins), np.float32
    )
    return _time_steps(step, state, sharding.global_batch({"fbank": fbank}, mesh), steps)


def _bare_tune(tune, steps: int) -> dict:
    import numpy as np
    from step_time import tuning_step

    from uamix_jax.training import sharding

    step, state, mesh, encoder = tuning_step(tune, TUNE_BLOCKS)
    batch_size = tune.data.batch_size
    rng = np.random.default_rng(0)
    batch = {
        "fbank": rng.standard_normal(
            (batch_size, encoder.target_length, encoder.num_mel_bins), np.float32
        ),
        "id": np.arange(batch_size, dtype=np.int32),
        "label": np.zeros(batch_size, np.int32),
    }
    return _time_steps(step, state, sharding.global_batch(batch, mesh), steps)


def _job(config, job_name: str, epochs: int) -> dict:
    """Wall time of the job for epochs + 2 and for epochs, each in a fresh workdir."""
    import importlib

    job = importlib.import_module(f"uamix_jax.jobs.{job_name}")
    walls, steps = {}, {}
    for run_epochs in (epochs + 2, epochs):
        config.schedule.num_epochs = run_epochs
        with tempfile.TemporaryDirectory(prefix="replay_speed_") as workdir:
            start = time.perf_counter()
            result = job.run(config, workdir)
            walls[run_epochs], steps[run_epochs] = time.perf_counter() - start, result["step"]
    long, short = epochs + 2, epochs
    step_s = (walls[long] - walls[short]) / (steps[long] - steps[short])
    return {"median_s": step_s, "min_s": step_s, "wall_s": walls, "steps": steps}


def worker(kind: str, data_dir: str, steps: int, epochs: int) -> dict:
    from uamix_jax import xla_setup

    xla_setup.set_cpu_xla_flags()
    pretrain, tune = _configs(data_dir)
    if kind == "prepare":
        from uamix_jax.data import sources

        sources.prepare(pretrain.data)
        return {}
    if kind == "bare_pretrain":
        return _bare_pretrain(pretrain, steps)
    if kind == "bare_tune":
        return _bare_tune(tune, steps)
    if kind == "job_pretrain":
        return _job(pretrain, "pretrain", epochs)
    if kind == "job_tune":
        return _job(tune, "tune", epochs)
    raise ValueError(f"unknown measurement {kind!r}")


# --- driver ------------------------------------------------------------------------------


def _environment() -> dict[str, str]:
    """The allocator settings main.py gives itself, for every worker alike."""
    sys.path.insert(0, REPO)
    from uamix_jax import xla_setup

    return xla_setup.host_allocator_environment(dict(os.environ))


def run_worker(tree: str, kind: str, args, environ: dict[str, str]) -> dict:
    environ = dict(environ, PYTHONPATH=tree)
    command = [sys.executable, os.path.abspath(__file__), "--worker", kind,
               "--data_dir", args.data_dir, "--steps", str(args.steps),
               "--epochs", str(args.epochs)]  # fmt: skip
    done = subprocess.run(command, cwd=tree, env=environ, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith(PROTOCOL_PREFIX):
            return json.loads(line[len(PROTOCOL_PREFIX) :])
    raise RuntimeError(f"{kind} in {tree} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")


def model_flops() -> dict[str, int]:
    """Model FLOPs of one pretraining and one tuning step (the replay's own count)."""
    sys.path.insert(0, REPO)
    from uamix_jax.experiments import replay
    from uamix_jax.models import audiomae

    pretrain, tune = _configs("")
    encoder = audiomae.preset(
        pretrain.model.preset,
        target_length=pretrain.data.target_length,
        **pretrain.model.overrides.to_dict(),
    )
    return {
        "pretrain": replay.pretrain_step_flops(
            encoder, pretrain.model.to_dict(), pretrain.data.batch_size,
            pretrain.masking.mask_ratio,
        ),  # fmt: skip
        "tune": replay.tune_step_flops(
            encoder, tune.method.to_dict(), tune.data.batch_size, TUNE_BLOCKS
        ),
        "batch": pretrain.data.batch_size,
    }


def matmul_gflops() -> float:
    """The 4096^3 float32 matmul rate (best of JAX and PyTorch), in a worker process."""
    code = ("import json, peak_flops; "
            "print(json.dumps(peak_flops.measured_matmul_gflops()['gflops']))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(__file__),
                          env=_environment(), capture_output=True, text=True, check=True)  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="/tmp/base41029db", help="the other tree (a worktree)")
    parser.add_argument("--base_name", default="41029db")
    parser.add_argument("--rounds", type=int, default=2, help="A/B rounds, alternating order")
    parser.add_argument("--steps", type=int, default=15, help="timed bare steps per worker")
    parser.add_argument("--epochs", type=int, default=1, help="the short job run (epochs)")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--data_dir", default=os.path.join(tempfile.gettempdir(), "replay_speed"))
    parser.add_argument("--json", default="", help="also write the results here")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = worker(args.worker, args.data_dir, args.steps, args.epochs)
        print(PROTOCOL_PREFIX + json.dumps(result), flush=True)
        return

    environ = _environment()
    trees = {"this tree": REPO, args.base_name: os.path.abspath(args.base)}
    run_worker(REPO, "prepare", args, environ)
    flops = model_flops()
    peaks, loads = [matmul_gflops()], [load_average()]
    results = {name: {kind: [] for kind in args.kinds} for name in trees}
    for round_index in range(args.rounds):
        order = list(trees) if round_index % 2 == 0 else list(trees)[::-1]
        for kind in args.kinds:
            for name in order:
                results[name][kind].append(run_worker(trees[name], kind, args, environ))
                print(f"round {round_index + 1} {kind} {name}: "
                      f"{results[name][kind][-1]['median_s']:.3f} s/step", flush=True)  # fmt: skip
            loads.append(load_average())
    peaks.append(matmul_gflops())
    print_table(args, trees, results, flops, peaks, loads)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(dict(results=results, flops=flops, peaks=peaks, loads=loads), file, indent=1)


def print_table(args, trees, results, flops, peaks, loads) -> None:
    import subprocess as sp

    model = next(
        (line.split(":", 1)[1].strip() for line in sp.run(["lscpu"], capture_output=True,
         text=True).stdout.splitlines() if line.startswith("Model name")), platform.processor()
    )  # fmt: skip
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n{model}, {os.cpu_count()} cores, {when}; load average {min(loads):.1f}-"
          f"{max(loads):.1f}; 4096^3 float32 matmul {peaks[0]:.0f} GFLOP/s at the start, "
          f"{peaks[-1]:.0f} at the end; {args.rounds} interleaved rounds")
    print("| measurement | tree | s/step (median of rounds) | fastest | clips/s | model GFLOP/s "
          "| of matmul rate | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    base = list(trees)[1]
    peak = max(peaks)
    for kind in args.kinds:
        step_flops = flops["pretrain" if kind.endswith("pretrain") else "tune"]
        base_s = statistics.median(r["median_s"] for r in results[base][kind])
        for name in trees:
            rows = results[name][kind]
            seconds = statistics.median(r["median_s"] for r in rows)
            fastest = min(r["min_s"] for r in rows)
            gflops = step_flops / seconds / 1e9
            print(f"| {kind.replace('_', ' ')} | {name} | {seconds:.3f} | {fastest:.3f} | "
                  f"{flops['batch'] / seconds:.0f} | {gflops:.1f} | {gflops / peak:.0%} | "
                  f"{base_s / seconds:.2f}x |")
    compile_rows = [
        f"{kind.split('_')[1]} {name} {statistics.median(r['compile_s'] for r in results[name][kind]):.1f} s"
        for kind in args.kinds if kind.startswith("bare") for name in trees
    ]  # fmt: skip
    if compile_rows:
        print("\nfirst call (compile) of the bare steps: " + ", ".join(compile_rows))


if __name__ == "__main__":
    main()
