"""Checks of a tuning config before any work starts; every message names the field."""

from __future__ import annotations

import os

import jax
import ml_collections

from uamix_jax.data import sources
from uamix_jax.training import mixing, optim


def validate_tune_config(
    config: ml_collections.ConfigDict,
    depth: int,
    device_count: int | None = None,
    process_count: int | None = None,
) -> None:
    """Raises ValueError (or FileNotFoundError) naming the first bad field of ``config``."""
    device_count = jax.device_count() if device_count is None else device_count
    process_count = jax.process_count() if process_count is None else process_count
    batch, method = config.data.batch_size, config.method
    if batch <= 0 or batch % device_count:
        raise ValueError(
            f"config.data.batch_size={batch} (the global batch) must be a positive "
            f"multiple of the device count ({device_count})"
        )
    if batch % process_count:
        raise ValueError(
            f"config.data.batch_size={batch} must be divisible by the number of "
            f"hosts ({process_count})"
        )
    if method.queue_size <= 0 or method.queue_size % batch:
        raise ValueError(
            f"config.method.queue_size={method.queue_size} must be a positive multiple "
            f"of the global batch config.data.batch_size={batch}"
        )
    if not 1 <= method.topk <= method.queue_size:
        raise ValueError(
            f"config.method.topk={method.topk} must lie in [1, "
            f"config.method.queue_size={method.queue_size}]"
        )
    if method.mix not in mixing.MIX_KINDS:
        raise ValueError(f"config.method.mix={method.mix!r}: expected one of {mixing.MIX_KINDS}")
    if config.schedule.num_epochs <= 0:
        raise ValueError(
            f"config.schedule.num_epochs={config.schedule.num_epochs} must be positive"
        )
    optim.validate_stages(config.schedule.stages, depth, "config.schedule.stages")
    last_start = max(epoch for epoch, _ in config.schedule.stages)
    if last_start >= config.schedule.num_epochs:
        raise ValueError(
            f"config.schedule.stages starts a stage at epoch {last_start}, not before "
            f"config.schedule.num_epochs={config.schedule.num_epochs}"
        )


def check_init_checkpoint(path: str | None) -> None:
    """``config.init_checkpoint`` must be an ``audiomae.save`` directory when set."""
    if path and not os.path.isfile(os.path.join(path, "config.json")):
        raise FileNotFoundError(
            f"config.init_checkpoint={path!r}: no AudioMAE checkpoint there (expected a directory "
            "written by audiomae.save or weights_conversion, with config.json)"
        )


def check_data(data: ml_collections.ConfigDict) -> None:
    """The data set must be built under ``data.data_dir`` or buildable from ``data.manual_dir``."""
    if data.name == "synthetic" or os.path.isdir(sources.prepared_dir(data)):
        return
    if not data.manual_dir or not os.path.isdir(data.manual_dir):
        raise FileNotFoundError(
            f"config.data.manual_dir={data.manual_dir!r} is not a folder and no built "
            f"{data.name!r} data set is in config.data.data_dir={data.data_dir!r} (looked for "
            f"{sources.prepared_dir(data)})"
        )
