"""Config validation: each bad field is reported by name before any work starts."""

import pytest
from jobs_testing import tiny_config

from uamix_jax.jobs import tune
from uamix_jax.training import validation

DEPTH = 2


def check(config, **counts):
    validation.validate_tune_config(
        config, DEPTH, **{"device_count": 2, "process_count": 1, **counts}
    )


def test_tiny_config_is_valid():
    check(tiny_config())


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("data.batch_size", 7, r"config\.data\.batch_size=7 .* device count \(2\)"),
        ("method.queue_size", 20, r"config\.method\.queue_size=20 .* multiple of the global batch"),
        ("method.topk", 17, r"config\.method\.topk=17"),
        ("method.mix", "cutout", r"config\.method\.mix='cutout'"),
        ("schedule.num_epochs", 0, r"config\.schedule\.num_epochs=0"),
        ("schedule.stages", ((0, 0), (0, 1)), r"config\.schedule\.stages: .* strictly increasing"),
        ("schedule.stages", ((0, 0), (1, 3)), r"config\.schedule\.stages: trainable_blocks 3"),
        (
            "schedule.stages",
            ((0, 0), (2, 1)),
            r"config\.schedule\.stages starts a stage at epoch 2",
        ),
    ],
)
def test_bad_field_is_named(field, value, message):
    config = tiny_config()
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(ValueError, match=message):
        check(config)


def test_batch_must_split_over_hosts():
    config = tiny_config()
    config.data.batch_size = 6
    with pytest.raises(ValueError, match=r"config\.data\.batch_size=6 .* hosts \(4\)"):
        check(config, device_count=2, process_count=4)


def test_missing_init_checkpoint_is_named(tmp_path):
    config = tiny_config()
    config.init_checkpoint = str(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"config\.init_checkpoint=.*absent"):
        tune.run(config, str(tmp_path / "work"))


def test_missing_data_is_named(tmp_path):
    config = tiny_config(str(tmp_path / "data"))
    config.data.name = "esc50"
    config.data.manual_dir = str(tmp_path / "no_esc50_here")
    with pytest.raises(FileNotFoundError, match=r"config\.data\.manual_dir=.*no_esc50_here"):
        tune.run(config, str(tmp_path / "work"))
