"""Entry point: ``python main.py --config=configs/X.py --workdir=DIR [--config.field=value ...]``.

Dispatches on ``config.mode``; each mode's ``run(config, workdir)`` lives in its own
module, imported only when chosen. Multi-host runs start ``jax.distributed`` here, once,
before any job touches a device (docs/multihost.md).
"""

import importlib
import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

from uamix_jax import xla_setup

# Before the config file or a runner can start a JAX backend, which reads XLA_FLAGS once;
# the loader reads the allocator settings at process start, so on CPU hosts the first run
# restarts itself with them.
xla_setup.restart_with_host_allocator()
xla_setup.set_cpu_xla_flags()

RUNNERS = {
    "demo": "uamix_jax.jobs.demo",
    "tune": "uamix_jax.jobs.tune",
    "pretrain": "uamix_jax.jobs.pretrain",
    "finetune": "uamix_jax.jobs.finetune",
    "compare": "uamix_jax.evaluation.compare",
    "replay": "uamix_jax.experiments.replay",
}
CONFIG_FILE = "config.json"

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to a configs/*.py file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and outputs.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0, for multi-host runs where JAX cannot find the other hosts "
    "itself (with --num_processes and --process_id).",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-host run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, from 0.")
flags.mark_flags_as_required(["config", "workdir"])


def initialize_distributed(config) -> None:
    """Connects the processes of a multi-host run: from the flags when given, else (with
    ``config.distributed``) by the platform's auto-detection (TPU VMs, SLURM, Open MPI)."""
    import jax

    if _COORDINATOR.value or _NUM_PROCESSES.value or _PROCESS_ID.value is not None:
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    elif config.get("distributed"):
        jax.distributed.initialize()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config, workdir = _CONFIG.value, _WORKDIR.value
    mode = config.get("mode")
    if mode not in RUNNERS:
        raise app.UsageError(f"config.mode={mode!r}: expected one of {sorted(RUNNERS)}")
    if not flags.FLAGS["verbosity"].present:
        # Library INFO logs (orbax, TFDS) only on request: --verbosity=0 (or -v 0).
        logging.set_verbosity(logging.WARNING)
    initialize_distributed(config)
    import jax

    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, CONFIG_FILE), "w") as file:
            json.dump(config.to_dict(), file, indent=2, default=str)
    importlib.import_module(RUNNERS[mode]).run(config, workdir)


if __name__ == "__main__":
    app.run(main)
