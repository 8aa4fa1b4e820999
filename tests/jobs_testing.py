"""Tiny configs of every job, shared by the job tests; also a config file for main.py:

    python main.py --config=tests/jobs_testing.py:JOB[,DATA_DIR] --workdir=W

JOB is one of 'tune', 'pretrain', 'finetune', 'demo'; DATA_DIR (optional) a built data set
to reuse ('' builds the synthetic set in W/data).
"""

import os
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import orbax.checkpoint as ocp

from configs import demo, finetune_synthetic, pretrain_demo


def tiny_config(data_dir: str = "") -> ml_collections.ConfigDict:
    """Tuning: a 2-block 32-wide encoder on 24 one-second synthetic clips: 3 steps an
    epoch, 2 stages."""
    config = demo.tune_config()  # from random weights: pretraining has its own tests
    config.model.overrides = ml_collections.ConfigDict(dict(embed_dim=32, depth=2, num_heads=2))
    config.data.update(
        dict(data_dir=data_dir, split="train[:75%]", classes=(), target_length=96, batch_size=8)
    )
    config.data.synthetic.update(dict(num_classes=4, clips_per_class=8, seconds=1.0))
    config.data.augment.update(dict(time_shift=96, freq_mask=16, time_mask=16))
    config.method.update(
        dict(queue_size=16, topk=2, proj_hidden_dim=32, output_dim=16, pred_hidden_dim=32)
    )
    config.schedule.update(dict(num_epochs=2, stages=((0, 0), (1, 2))))
    config.checkpoint.every_steps = 2
    config.log_every = 1
    return config


def tiny_pretrain_config(data_dir: str = "") -> ml_collections.ConfigDict:
    """MAE pretraining: a 1-block 32-wide encoder on 12 one-second clips: 2 steps an epoch."""
    config = pretrain_demo.get_config()
    config.model.overrides = ml_collections.ConfigDict(dict(embed_dim=32, depth=1, num_heads=2))
    config.model.update(dict(decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2))
    config.data.update(
        dict(data_dir=data_dir, split="train", classes=(), target_length=96, batch_size=6)
    )
    config.data.synthetic.update(dict(num_classes=3, clips_per_class=4, seconds=1.0))
    config.schedule.num_epochs = 2
    config.checkpoint.update(dict(every_steps=2, asynchronous=False))
    config.log_every = 1
    config.num_reconstructions = 2
    return config


def tiny_finetune_config(data_dir: str = "") -> ml_collections.ConfigDict:
    """Fine-tuning: a random 1-block 32-wide classifier on 16 one-second clips (halves as
    train and test): 2 steps an epoch, 2 epochs."""
    config = finetune_synthetic.get_config()
    config.model.overrides = ml_collections.ConfigDict(dict(embed_dim=32, depth=1, num_heads=2))
    config.data.update(dict(data_dir=data_dir, target_length=96, batch_size=4))
    config.data.synthetic.update(dict(num_classes=2, clips_per_class=8, seconds=1.0))
    config.schedule.num_epochs = 2
    config.checkpoint.every_steps = 2
    config.log_every = 1
    return config


def tiny_demo_config(data_dir: str = "") -> ml_collections.ConfigDict:
    """The demo's composition at the tiny scale: pretrain, tune and a few-shot report on
    held-out classes."""
    config = demo.get_config()
    config.pretrain = tiny_pretrain_config(data_dir)
    config.pretrain.model.overrides.depth = 2
    config.pretrain.data.update(dict(classes=(0, 1), target_length=96, batch_size=6))
    config.pretrain.data.synthetic.update(dict(num_classes=4, clips_per_class=6))
    config.tune = tiny_config(data_dir)
    config.tune.data.update(dict(split="train", classes=(0, 1), batch_size=6))
    config.tune.data.synthetic.update(config.pretrain.data.synthetic)
    config.tune.method.queue_size = 12
    config.fewshot.update(dict(classes=(2, 3), n_way=2, k_shot=1, n_query=2, episodes=10))
    return config


JOBS = {
    "tune": tiny_config,
    "pretrain": tiny_pretrain_config,
    "finetune": tiny_finetune_config,
    "demo": tiny_demo_config,
}


def get_config(arg: str = "tune") -> ml_collections.ConfigDict:
    job, _, data_dir = arg.partition(",")
    return JOBS[job](data_dir)


# ---------------------------------------------------------------- running main.py
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILL_DEADLINE_S = 600  # the first step compiles; a loaded CI machine is slow


def main_command(job: str, workdir: str, data_dir: str = "", *overrides: str) -> list[str]:
    """The main.py command line of a tiny job (see the module docstring)."""
    return [
        sys.executable,
        "main.py",
        f"--config=tests/jobs_testing.py:{job},{data_dir}",
        f"--workdir={workdir}",
        *overrides,
    ]


def subprocess_env(**variables: str) -> dict[str, str]:
    """The environment of a main.py subprocess: this one's (with the test process's
    compilation cache, tests/conftest.py) and ``variables``."""
    return dict(os.environ, **variables)


def checkpoint_steps(checkpoint_dir: str) -> list[int]:
    """Steps of the finished checkpoints in an orbax checkpoint folder."""
    if not os.path.isdir(checkpoint_dir):
        return []
    return sorted(int(name) for name in os.listdir(checkpoint_dir) if name.isdigit())


def kill_when_saved(processes: list[subprocess.Popen], checkpoint_dir: str, step: int) -> None:
    """SIGKILLs every process as soon as checkpoint ``step`` is on disk."""
    deadline = time.time() + KILL_DEADLINE_S
    while time.time() < deadline and all(p.poll() is None for p in processes):
        if step in checkpoint_steps(checkpoint_dir):
            break
        time.sleep(0.05)
    for process in processes:
        process.send_signal(signal.SIGKILL)
    for process in processes:
        assert process.wait() == -signal.SIGKILL, "a run ended before it could be killed"
    assert checkpoint_steps(checkpoint_dir)[-1] >= step


def final_state(checkpoint_dir: str) -> tuple[int, dict]:
    """(step, raw train-state tree) of the newest checkpoint in an orbax checkpoint folder."""
    step = checkpoint_steps(checkpoint_dir)[-1]
    path = os.path.join(checkpoint_dir, str(step), "state")
    checkpointer = ocp.StandardCheckpointer()
    # Read onto this process's first device, whatever topology wrote it (multi-host runs).
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
        checkpointer.metadata(path).item_metadata.tree,
    )
    return step, jax.device_get(checkpointer.restore(path, target))
