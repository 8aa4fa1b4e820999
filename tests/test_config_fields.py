"""Every field the training jobs' shipped configs expose is exercised: changed from its
shipped value in a tiny run here or in a named test, or refused by validation with a
message naming it. A new config field without either fails `test_every_field_is_exercised`.

Scope: the configs of modes tune, pretrain, finetune and demo (the demo's `pretrain` and
`tune` blocks are those jobs' configs). Evaluation-only modes have their own tests
(tests/test_eval_compare.py, tests/test_replay.py).
"""

import glob
import importlib
import os
import subprocess

import jax
import jobs_testing
import numpy as np
import pytest

from uamix_jax.jobs import finetune, pretrain, tune

REPO = jobs_testing.REPO
# Tiny runs at non-default values: (job, {field: value}). Each must finish with a finite loss.
RUNS = {
    "tune_a": (
        "tune",
        {
            "model.drop_path_rate": 0.1,
            "model.dtype": "bfloat16",
            "model.kernels": "stock",
            "model.preset": "small",
            "model.overrides": {"embed_dim": 32, "depth": 2, "num_heads": 2, "remat": True},
            "method.mix": "tf_cutmix",
            "method.mix_patch_aligned": True,
            "method.mix_per_sample": False,
            "method.mix_alpha": 0.5,
            "method.mix_weight": 0.5,
            "method.temperature": 0.2,
            "method.ema_decay": 0.0,
            "method.topk": 1,
            "method.output_dim": 8,
            "method.proj_hidden_dim": 16,
            "method.pred_hidden_dim": 16,
            "optim.grad_clip": 1.0,
            "optim.min_lr": 1e-5,
            "optim.b1": 0.8,
            "optim.b2": 0.9,
            "optim.eps": 1e-6,
            "optim.layer_decay": 0.5,
            "optim.lr_batch_factor": 1.0,
            "optim.warmup_fraction": 0.5,
            "optim.weight_decay": ((r".*/kernel", 0.01),),
            "data.roll": True,
            "data.gain": True,
            "data.augment.gain_db": 3.0,
            "data.augment.time_shift": 8,
            "data.augment.freq_mask": 0,
            "data.augment.time_mask": 0,
            "data.shuffle_seed": 1,
            "data.prefetch": 1,
            "data.read_threads": 1,
            "data.norm": "esc50",
            "checkpoint.asynchronous": False,
            "checkpoint.max_to_keep": 1,
            "seed": 1,
            "log_every": 2,
            "schedule.stages": ((0, 1), (1, 2)),
        },
    ),
    "tune_b": (
        "tune",
        {
            "method.mix": "mixup",
            "method.queue_size": 32,
            "data.classes": (0, 1, 2),
            "data.batch_size": 4,
            "schedule.num_epochs": 1,
            "schedule.stages": ((0, 2),),
        },
    ),
    "pretrain": (
        "pretrain",
        {
            "masking.kind": "time_freq",
            "masking.mask_t_prob": 0.5,
            "masking.mask_f_prob": 0.25,
            "norm_pix_loss": False,
            "model.drop_path_rate": 0.1,
            "model.decoder_mode": "local",
            "model.dtype": "bfloat16",
            "num_reconstructions": 1,
            "data.target_length": 128,  # a grid of whole local-attention windows
        },
    ),
    "finetune": (
        "finetune",
        {
            "model.drop_path_rate": 0.0,
            "loss": "bce",
            "metric": "mAP",
            "label_smoothing": 0.0,
            "num_classes": 2,
            "specaug.freq_mask": 8,
            "specaug.time_mask": 8,
            "eval_every_epochs": 2,
            "schedule.steps_per_epoch": 1,
            "train_split": "train[:25%]",
            "test_split": "train[25%:50%]",
        },
    ),
}
JOBS = {
    "tune": (tune.run, jobs_testing.tiny_config),
    "pretrain": (pretrain.run, jobs_testing.tiny_pretrain_config),
    "finetune": (finetune.run, jobs_testing.tiny_finetune_config),
}
# Refused before any work: (job, {field: value}, message naming the field).
REFUSED = [
    ("tune", {"method.mix": "cutout"}, "config.method.mix"),
    ("tune", {"method.queue_size": 12}, "config.method.queue_size"),
    ("tune", {"method.topk": 0}, "config.method.topk"),
    ("tune", {"data.batch_size": 7}, "config.data.batch_size"),
    ("tune", {"schedule.stages": ((1, 0),)}, "config.schedule.stages"),
    ("tune", {"schedule.num_epochs": 0}, "config.schedule.num_epochs"),
    ("tune", {"checkpoint.every_steps": 0}, "config.checkpoint.every_steps"),
    ("tune", {"log_every": 0}, "config.log_every"),
    ("tune", {"init_checkpoint": "/nonexistent"}, "config.init_checkpoint"),
    ("tune", {"model.kernels": "gpu"}, "kernels"),
    ("tune", {"data.mixup_prob": 0.5}, "mixup_prob"),
    ("tune", {"data.norm": "imagenet"}, "data.norm"),
    ("pretrain", {"masking.kind": "blocks"}, "config.masking.kind"),
    ("pretrain", {"masking.mask_ratio": 1.0}, "mask_ratio"),
    ("finetune", {"loss": "hinge"}, "config.loss"),
    ("finetune", {"metric": "f1"}, "config.metric"),
]
# Fields changed by another test (the file must name the field).
ELSEWHERE = {
    "data.num_workers": "test_pipeline.py",
    "data.mixup_prob": "test_finetune.py",
    "data.mixup_alpha": "test_pipeline_transforms.py",
    "data.strict": "test_builders.py",
    "data.manual_dir": "test_as20k_sequence.py",
    "data.builder_config": "test_sources.py",
    "data.name": "test_as20k_sequence.py",
    "data.data_dir": "test_as20k_sequence.py",
    "data.split": "jobs_testing.py",
    "data.target_length": "jobs_testing.py",
    "data.synthetic": "jobs_testing.py",
    "data.augment.norm": "test_augment.py",
    "init_checkpoint": "test_as20k_sequence.py",
    "mask_t_prob": "test_finetune.py",
    "mask_f_prob": "test_finetune.py",
    "cross_validation_folds": "test_finetune.py",
    "optim.base_lr": "test_multihost.py",
    "checkpoint.every_steps": "test_tune_job.py",
    "distributed": "test_multihost.py",
    "mode": "test_config_fields.py",
    "masking.mask_ratio": "test_pretrain_step.py",
    "model.decoder_depth": "jobs_testing.py",
    "model.decoder_embed_dim": "jobs_testing.py",
    "model.decoder_num_heads": "jobs_testing.py",
    "fewshot": "jobs_testing.py",
    "tune.init_checkpoint": "test_jobs_resume.py",
}


def set_fields(config, fields):
    for path, value in fields.items():
        *parents, name = path.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[name] = value
    return config


def leaves(config, prefix=""):
    for key, value in config.items():
        if hasattr(value, "items") and not isinstance(value, dict) and key != "overrides":
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield prefix + key


def shipped_fields():
    """{field path: config files} over the shipped configs of the training modes."""
    fields = {}
    for path in sorted(glob.glob(os.path.join(REPO, "configs", "*.py"))):
        name = os.path.basename(path)[:-3]
        if name in ("__init__", "eval_common"):
            continue
        config = importlib.import_module(f"configs.{name}").get_config()
        if config.get("mode") not in ("tune", "pretrain", "finetune", "demo"):
            continue
        for field in leaves(config):
            fields.setdefault(field, set()).add(name)
    return fields


def covered(field):
    """How ``field`` (a path, demo blocks included) is exercised, or None."""
    candidates = [field]
    head, _, rest = field.partition(".")
    if head in ("pretrain", "tune"):  # the demo's blocks are those jobs' configs
        candidates.append(rest)
    for name in candidates:
        for _, fields in RUNS.values():
            if name in fields:
                return "run"
        if any(name in fields for _, fields, _ in REFUSED):
            return "refused"
        for prefix, test_file in ELSEWHERE.items():
            if name == prefix or name.startswith(prefix + "."):
                return test_file
    return None


def test_every_field_is_exercised():
    missing = sorted(field for field in shipped_fields() if covered(field) is None)
    assert not missing, f"config fields no test changes or refuses: {missing}"
    for field, test_file in ELSEWHERE.items():
        text = open(os.path.join(REPO, "tests", test_file)).read()
        assert field.split(".")[-1] in text, f"{test_file} does not name {field}"


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    """One data folder per job, built by the first test that needs it."""
    return {job: str(tmp_path_factory.mktemp(f"{job}_data")) for job in JOBS}


@pytest.mark.parametrize("job, fields, message", REFUSED)
def test_bad_values_are_refused_naming_the_field(job, fields, message, data_dirs, tmp_path):
    run, make_config = JOBS[job]
    config = set_fields(make_config(data_dirs[job]), fields)
    with pytest.raises((ValueError, FileNotFoundError), match=message.replace(".", r"\.")):
        run(config, str(tmp_path / "run"))
    assert not os.path.exists(os.path.join(tmp_path, "run", "checkpoints"))


@pytest.mark.parametrize("name", sorted(RUNS))
def test_non_default_values_run(name, data_dirs, tmp_path):
    job, fields = RUNS[name]
    run, make_config = JOBS[job]
    config = make_config(data_dirs[job])
    changed = {
        path for path, value in fields.items() if _get(config, path) != value
    }
    assert changed == set(fields), f"already the tiny config's values: {set(fields) - changed}"
    result = run(set_fields(config, fields), str(tmp_path / "run"))
    loss = result.get("loss", result.get("eval/loss"))
    assert loss is not None and np.isfinite(loss), result
    jax.clear_caches()


def _get(config, path):
    node = config
    for part in path.split("."):
        node = node[part]
    return node.to_dict() if hasattr(node, "to_dict") else node


def test_unknown_mode_is_named(tmp_path):
    command = jobs_testing.main_command("tune", str(tmp_path), "", "--config.mode=distill")
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert finished.returncode != 0 and "config.mode='distill'" in finished.stderr
