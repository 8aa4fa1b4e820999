"""Progress bar, TensorBoard event files (tensorboardX, no TensorFlow) and metrics.jsonl.

Only process 0 writes; other hosts get a silent monitor.
"""

from __future__ import annotations

import json
import os
import time
from typing import Mapping

import jax
import tqdm
from tensorboardX import SummaryWriter


def announce(message: str) -> None:
    """Prints one line on process 0 (above any progress bar)."""
    if jax.process_index() == 0:
        tqdm.tqdm.write(message)


class Monitor:
    """Reports step metrics to a progress line, TensorBoard and ``workdir/metrics.jsonl``."""

    def __init__(self, workdir: str, total_steps: int, global_batch: int, initial_step: int = 0):
        self._active = jax.process_index() == 0
        self._global_batch = global_batch
        self._last_time, self._last_step = time.perf_counter(), initial_step
        if not self._active:
            return
        os.makedirs(workdir, exist_ok=True)
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
        self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"))
        # tqdm shows the ETA from its own rate estimate; clips/s goes in the postfix.
        self._bar = tqdm.tqdm(
            total=total_steps,
            initial=initial_step,
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
        )

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        """Logs scalar ``metrics`` at ``step`` (the number of steps done), with clips/s."""
        now = time.perf_counter()
        clips_per_s = (
            (step - self._last_step) * self._global_batch / max(now - self._last_time, 1e-9)
        )
        self._last_time, self._last_step = now, step
        if not self._active:
            return
        record = {
            "step": step,
            **{k: float(v) for k, v in metrics.items()},
            "clips_per_s": clips_per_s,
        }
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for key, value in record.items():
            if key != "step":
                self._writer.add_scalar(key, value, step)
        self._bar.set_postfix(
            loss=f"{record['loss']:.4f}", clips_s=f"{clips_per_s:.1f}", refresh=False
        )
        self._bar.update(step - self._bar.n)

    def stage(self, step: int, stage: int, fields: Mapping[str, int]) -> None:
        """Announces a new stage at ``step`` with its ``fields`` (e.g. trainable blocks)."""
        if not self._active:
            return
        described = ", ".join(f"{key.replace('_', ' ')} {value:,}" for key, value in fields.items())
        self._bar.write(f"step {step}: stage {stage}" + (f", {described}" if described else ""))
        for key, value in fields.items():
            self._writer.add_scalar(key, value, step)
        self._jsonl.write(json.dumps({"step": step, "stage": stage, **fields}) + "\n")

    def close(self) -> None:
        if self._active:
            self._bar.close()
            self._writer.close()
            self._jsonl.close()
