"""Multi-host runs as a user launches them: two main.py processes on 127.0.0.1 (one CPU
device each, jax.distributed with CPU collectives) against one process with two devices.

The global batch of a step does not depend on how many hosts read it, so both end with the
same parameters, up to the order in which the collectives sum.
"""

import json
import os
import socket
import subprocess

import jax
import jobs_testing
import numpy as np
import pytest

from uamix_jax.jobs import finetune, pretrain, tune

# Adam's m / sqrt(v) turns the rounding of near-zero gradients into whole-lr steps of
# either sign; with eps >> sqrt(v) it is momentum SGD at lr / eps, so updates stay
# proportional to gradients and the comparison measures the data-parallel arithmetic.
JOBS = {
    "tune": (tune.run, jobs_testing.tiny_config, 1e1),
    "pretrain": (pretrain.run, jobs_testing.tiny_pretrain_config, 1e1),
    "finetune": (finetune.run, jobs_testing.tiny_finetune_config, 5e1),
}
ADAM_EPS = 1e3
TOTAL_STEPS = {"tune": 6, "pretrain": 4, "finetune": 4}
OUTPUT = {"tune": tune.ENCODER_DIR, "pretrain": pretrain.MAE_DIR, "finetune": finetune.CLASSIFIER_DIR}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_device_flags() -> str:
    flags = os.environ.get("XLA_FLAGS", "")
    return flags.replace("--xla_force_host_platform_device_count=2", "") + (
        " --xla_force_host_platform_device_count=1"
    )


def launch(job, workdir, data_dir, base_lr):
    """Starts the two processes of a run; their output goes to workdir's parent."""
    env = jobs_testing.subprocess_env(XLA_FLAGS=one_device_flags(), JAX_PLATFORMS="cpu")
    port = free_port()
    processes = []
    for process_id in range(2):
        command = jobs_testing.main_command(
            job,
            workdir,
            data_dir,
            f"--config.optim.base_lr={base_lr}",
            f"--config.optim.eps={ADAM_EPS}",
            f"--coordinator_address=127.0.0.1:{port}",
            "--num_processes=2",
            f"--process_id={process_id}",
        )
        log = open(f"{workdir}.process{process_id}.log", "w")
        processes.append(
            subprocess.Popen(command, cwd=jobs_testing.REPO, env=env, stdout=log, stderr=log)
        )
    return processes


def wait(processes, workdir):
    for process_id, process in enumerate(processes):
        if process.wait(timeout=jobs_testing.KILL_DEADLINE_S) != 0:
            pytest.fail(open(f"{workdir}.process{process_id}.log").read()[-4000:])


def assert_close(multi_host, single_host):
    """Each leaf within 1e-4 of its magnitude (the collectives' summation order)."""

    def close(a, b):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * (np.abs(b).max() + 1e-6))

    jax.tree.map(close, multi_host, single_host)


@pytest.mark.parametrize("job", sorted(JOBS))
def test_two_processes_killed_and_restarted_match_one_process(job, tmp_path):
    run, make_config, base_lr = JOBS[job]
    config = make_config()
    config.optim.update(dict(base_lr=base_lr, eps=ADAM_EPS))
    single_dir = str(tmp_path / "single")
    run(config, single_dir)
    data_dir = os.path.join(single_dir, "data")
    _, single = jobs_testing.final_state(os.path.join(single_dir, "checkpoints"))

    workdir = str(tmp_path / "two_hosts")
    checkpoints = os.path.join(workdir, "checkpoints")
    jobs_testing.kill_when_saved(launch(job, workdir, data_dir, base_lr), checkpoints, 2)
    assert jobs_testing.checkpoint_steps(checkpoints)[-1] < TOTAL_STEPS[job]
    wait(launch(job, workdir, data_dir, base_lr), workdir)

    step, multi = jobs_testing.final_state(checkpoints)
    assert step == TOTAL_STEPS[job]
    assert_close(multi["params"], single["params"])
    assert_close(multi["opt_state"], single["opt_state"])
    # Outputs are written once, by process 0: one line per logged step (the restarted run
    # appends from its checkpoint on), one event file per start, the exported model.
    steps = [
        json.loads(line)["step"]
        for line in open(os.path.join(workdir, "metrics.jsonl"))
        if '"loss"' in line
    ]
    assert steps[-TOTAL_STEPS[job] + 2 :] == list(range(3, TOTAL_STEPS[job] + 1))
    assert len(os.listdir(os.path.join(workdir, "tensorboard"))) == 2
    assert os.path.isdir(os.path.join(workdir, OUTPUT[job]))

