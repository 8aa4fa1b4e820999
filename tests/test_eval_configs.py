"""Every evaluation config builds, names a known mode and data set, and holds the recipe."""

import importlib

import pytest

from uamix_jax import audio
from uamix_jax.evaluation import finetune

FINETUNE = [
    "finetune_as20k",
    "finetune_esc50",
    "finetune_spc2",
    "finetune_spc1",
    "finetune_synthetic",
]
COMPARE = ["compare_as20k", "compare_esc50", "compare_spc2", "compare_synthetic"]


def _config(name):
    return importlib.import_module(f"configs.{name}").get_config()


@pytest.mark.parametrize("name", FINETUNE + COMPARE)
def test_config_builds(name):
    config = _config(name)
    assert config.mode == ("finetune" if name.startswith("finetune") else "compare")
    assert config.data.norm in audio.NORM_STATS
    assert config.data.target_length % 16 == 0 and config.train_split != config.test_split


@pytest.mark.parametrize("name", FINETUNE)
def test_finetune_config_fields_are_valid(name):
    config = _config(name)
    assert config.loss in finetune.LOSSES and config.metric in ("mAP", "accuracy")
    assert 0 < config.optim.warmup_fraction < 1


def test_as20k_recipe_matches_audiomae():
    config = _config("finetune_as20k")
    assert (config.loss, config.metric, config.schedule.num_epochs, config.data.batch_size) == (
        "bce",
        "mAP",
        60,
        32,
    )
    assert (config.data.mixup_prob, config.data.mixup_alpha) == (0.5, 10.0)
    assert (config.specaug.freq_mask, config.specaug.time_mask) == (48, 192)
    assert (config.mask_t_prob, config.mask_f_prob, config.model.drop_path_rate) == (0.2, 0.2, 0.1)
    assert config.optim.layer_decay == 0.75 and config.optim.base_lr == 1e-3
    assert config.optim.warmup_fraction == pytest.approx(4 / 60)
    assert config.optim.weight_decay[-1] == (".*", 5e-4)


def test_speech_commands_variants_differ_only_in_the_task():
    spc2, spc1 = _config("finetune_spc2"), _config("finetune_spc1")
    assert (spc2.data.builder_config, spc1.data.builder_config) == ("spc2", "spc1")
    spc1.data.builder_config = "spc2"
    assert spc1.to_dict() == spc2.to_dict()
