"""Entry point: ``python main.py --config=configs/X.py --workdir=DIR [--config.field=value ...]``.

Dispatches on ``config.mode``; each mode's ``run(config, workdir)`` lives in its
own module, imported only when chosen.
"""

import importlib

from absl import app, flags, logging
from ml_collections import config_flags

from uamix_jax import xla_setup

# Before the config file or a runner can start a JAX backend, which reads XLA_FLAGS once;
# the loader reads the allocator settings at process start, so on CPU hosts the first run
# restarts itself with them.
xla_setup.restart_with_host_allocator()
xla_setup.set_cpu_xla_flags()

RUNNERS = {
    "tune": "uamix_jax.training.tune",
    "finetune": "uamix_jax.evaluation.finetune",
    "compare": "uamix_jax.evaluation.compare",
    "pretrain": "uamix_jax.pretraining.run",
}

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a configs/*.py file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and outputs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    mode = config.get("mode")
    if mode not in RUNNERS:
        raise app.UsageError(f"config.mode={mode!r}: expected one of {sorted(RUNNERS)}")
    logging.info("mode %s, workdir %s, config:\n%s", mode, _WORKDIR.value, config)
    importlib.import_module(RUNNERS[mode]).run(config, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
