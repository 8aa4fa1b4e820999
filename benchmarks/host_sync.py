"""Steps/s of the tiny tuning step with and without a host sync after every step.

The runner reads metrics from the device only on logging, evaluation and checkpoint steps;
reading them after every step (as a loop that logs every step does) makes the host wait for
each step before it dispatches the next. This prints steps/s both ways, interleaved.

    python benchmarks/host_sync.py --steps 30 --repetitions 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)

    import jax
    import numpy as np

    from step_time import tuning_step

    from configs import demo
    from uamix_jax.training import sharding

    config = demo.tune_config()
    config.data.batch_size = args.batch_size
    depth = config.model.overrides.depth
    step, state, mesh, encoder = tuning_step(config, depth)
    rng = np.random.default_rng(0)
    shape = (args.batch_size, encoder.target_length, encoder.num_mel_bins)
    batch = sharding.global_batch(
        {
            "fbank": rng.standard_normal(shape, np.float32),
            "id": np.arange(args.batch_size, dtype=np.int32),
        },
        mesh,
    )
    state, metrics = step(state, batch)  # compile
    jax.block_until_ready(metrics)

    def steps_per_s(sync_every_step: bool) -> float:
        nonlocal state
        start = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = step(state, batch)
            if sync_every_step:
                jax.device_get(metrics)
        jax.block_until_ready((state, metrics))
        return args.steps / (time.perf_counter() - start)

    rates = {True: [], False: []}
    for repetition in range(args.repetitions):
        for sync in (repetition % 2 == 0, repetition % 2 == 1):
            rates[sync].append(steps_per_s(sync))
    device = jax.devices()[0]
    print(f"tiny tuning step (demo encoder), batch {args.batch_size}, {device.platform}: "
          f"{device.device_kind}, {jax.device_count()} device(s), {args.steps} steps x "
          f"{args.repetitions}")
    print("| host sync | steps/s (median) | all |")
    print("|---|---|---|")
    for sync, label in ((True, "after every step"), (False, "on logging steps only")):
        values = ", ".join(f"{r:.2f}" for r in rates[sync])
        print(f"| {label} | {statistics.median(rates[sync]):.2f} | {values} |")


if __name__ == "__main__":
    sys.exit(main())
