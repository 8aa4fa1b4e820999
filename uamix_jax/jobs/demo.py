"""Mode 'demo': pretrain an MAE, tune it with uaMix-MAE, compare both few-shot.

Each stage is a job of its own, resumable and skipped when finished: ``config.pretrain``
runs in ``workdir/pretrain`` (unless ``config.tune.init_checkpoint`` names an encoder),
``config.tune`` in ``workdir``, and ``config.fewshot`` writes ``workdir/results.md`` and
``workdir/tsne.png``. Both training stages read one data set, built in ``workdir/data``.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from uamix_jax.evaluation import fewshot_report
from uamix_jax.jobs import pretrain, tune
from uamix_jax.models import audiomae
from uamix_jax.training import monitor, runner

PRETRAIN_DIR = "pretrain"


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Returns the tuning job's result with ``'fewshot'`` (accuracy of both encoders;
    process 0 only) added."""
    tune_config = runner.resolve_paths(config.tune, workdir)
    if not tune_config.init_checkpoint:
        pretrain_config = config.pretrain.copy_and_resolve_references()
        pretrain_config.data.data_dir = tune_config.data.data_dir
        monitor.announce(f"MAE pretraining in {os.path.join(workdir, PRETRAIN_DIR)}")
        pretrained = pretrain.run(pretrain_config, os.path.join(workdir, PRETRAIN_DIR))
        tune_config.init_checkpoint = pretrained["encoder_dir"]
    monitor.announce(f"uaMix-MAE tuning in {workdir}")
    result = tune.run(tune_config, workdir)
    target_length = tune_config.data.target_length
    encoders = {
        "MAE": audiomae.load(tune_config.init_checkpoint, target_length=target_length),
        "uaMix-MAE": audiomae.load(result["encoder_dir"]),
    }
    report = {}
    runner.on_host_0(
        "few-shot report written",
        lambda: report.update(
            fewshot_report.before_after(config.fewshot, tune_config.data, encoders, workdir)
        ),
    )
    return {**result, "fewshot": report}
