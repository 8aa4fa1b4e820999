"""Mode 'replay': the class split, the driver's arithmetic, and its quick setting end to end."""

import importlib.util
import json
import os

import ml_collections
import numpy as np
import pytest
from test_soundfont import write_sf2

from configs import replay_soundfont
from uamix_jax.data import soundfont
from uamix_jax.experiments import replay
from uamix_jax.models import audiomae


def test_full_split_is_disjoint_covers_every_program_and_every_family():
    config = replay_soundfont.get_config()
    sets = [set(config.classes[name]) for name in replay.CLASS_SETS]
    assert sum(map(len, sets)) == len(set().union(*sets)) == 128
    for family in range(16):
        members = set(range(8 * family, 8 * family + 8))
        assert [len(members & s) for s in sets] == [5, 1, 2]
    replay.check_config(config, num_classes=128)
    assert config.evaluate_on == "validation"  # the test classes only for the final table


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(validation=(1, 8, 21, 31, 0)), "validation and .test share classes \\[0\\]"),
        (dict(seen=()), "seen is empty"),
        (dict(test=(0, 1, 2, 3, 200)), "outside the 128"),
        (dict(validation=(1, 8, 21)), "5-way episodes need at least 5"),
    ],
)
def test_bad_class_splits_are_named(change, message):
    config = replay_soundfont.get_config()
    config.classes.update(change)
    with pytest.raises(ValueError, match=message):
        replay.check_config(config, num_classes=128)


def test_runs_and_ablation_overrides():
    config = replay_soundfont.get_config()
    runs = replay.tunings(config)
    assert [(name, seed) for name, seed, _ in runs] == [
        ("uaMix-MAE", 0),
        ("uaMix-MAE", 1),
        ("uaMix-MAE", 2),
        ("no mixing", 0),
        ("TF-CutMix", 0),
        ("mixup", 0),
        ("no progressive", 0),
    ]
    tune = config.tune.copy_and_resolve_references()
    for dotted, value in dict((name, o) for name, _, o in runs)["no progressive"]:
        replay._set_field(tune, dotted, value)
    assert tune.schedule.stages == ((0, 2),)
    with pytest.raises(ValueError, match="'method.mixx' is not a field"):
        replay._set_field(tune, "method.mixx", "none")


def test_flops_follow_views_trainable_blocks_and_schedule():
    config = replay_soundfont.get_config()
    encoder = audiomae.preset("tiny", target_length=96, embed_dim=128, depth=4, num_heads=4)
    method = config.tune.method.to_dict()
    flops = [replay.tune_step_flops(encoder, method, 64, blocks) for blocks in (0, 1, 2)]
    assert flops[0] < flops[1] < flops[2]
    no_mix = replay.tune_step_flops(encoder, dict(method, mix="none"), 64, 2)
    assert no_mix < flops[2]
    # A run: 1 epoch head-only, 1 with one block, 1 with two (the stages of the config).
    assert config.tune.schedule.stages == ((0, 0), (1, 1), (2, 2))
    run = replay.tune_run_flops(encoder, config.tune, total_steps=60)
    assert config.tune.schedule.num_epochs == 3
    assert run == 20 * (flops[0] + flops[1] + flops[2])
    mae_model = config.pretrain.model.to_dict()
    masked = replay.pretrain_step_flops(encoder, mae_model, 64, 0.8)
    assert masked < replay.pretrain_step_flops(encoder, mae_model, 64, 0.0)


def test_probe_halves_and_seed_intervals():
    labels = np.repeat(np.arange(4), 10)
    train, test = replay.probe_halves(labels, seed=0)
    assert not set(train) & set(test) and len(train) + len(test) == 40
    assert all(np.sum(labels[train] == c) == 5 for c in range(4))
    summary = replay.across_seeds([0.5, 0.6, 0.7])
    assert summary["mean"] == pytest.approx(0.6)
    assert summary["ci95"] == pytest.approx(4.303 * 0.1 / np.sqrt(3), rel=1e-3)


def _quick_config(tmp_path) -> ml_collections.ConfigDict:
    config = replay_soundfont.get_config("quick")
    if importlib.util.find_spec("pretty_midi") is None:
        # Without the [soundfont] extra: a SoundFont with the quick setting's programs (all
        # playing one tone, so only the path is tested, not the numbers).
        presets = [(f"P{p}", 0, p, 0) for p in replay_soundfont.QUICK_PROGRAMS]
        with config.unlocked():
            config.soundfont = write_sf2(tmp_path / "quick.sf2", presets)
    return config


def test_quick_setting_runs_every_stage__the_slowest_test(tmp_path):
    """The whole experiment at toy size, then again: the second run only re-reads caches."""
    config, workdir = _quick_config(tmp_path), str(tmp_path / "replay")
    report = replay.run(config, workdir)

    for name in ("results.md", "results.json", "results_validation.md", "accuracy.png",
                 "tsne.png"):  # fmt: skip
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    names = [c["name"] for c in soundfont.read_metadata(os.path.join(workdir, "soundfont_wavs"))
             ["classes"]]  # fmt: skip
    assert report["classes"]["validation"] == [names[i] for i in config.classes.validation]
    encoders = ["MAE", "uaMix-MAE (seed 0)", "uaMix-MAE (seed 1)", "MAE + more pretraining"]
    assert list(report["results"]) == encoders + [replay.RANDOM_INIT, replay.LOG_MEL]
    for result in report["results"].values():
        assert set(result["fewshot"]) == {
            f"5way-{k}shot/{c}" for k in (1, 5) for c in ("prototype", "logreg")
        }
        assert result["fewshot"]["5way-1shot/prototype"]["feature_transform"] == "cl2n"
        assert 0.0 <= result["knn"]["value"] <= 1.0 and "1shot" in result["probe"]
    pair = report["main_pair"]["5way-5shot/prototype"]
    assert pair["gap"] == pytest.approx(pair["uaMix-MAE"] - pair["MAE"])
    stages = report["stages"]
    assert stages["MAE + more pretraining"]["flops"] >= stages["uaMix-MAE (seed 0)"]["flops"]
    with open(os.path.join(workdir, "results.md")) as file:
        assert "## Cost" in file.read()

    # Every stage finished with this config: nothing trains again, the numbers are the same.
    stage_files = [
        os.path.join(root, replay.STAGE_FILE)
        for root, _, files in os.walk(workdir)
        if replay.STAGE_FILE in files
    ]
    before = {path: open(path).read() for path in stage_files}
    again = replay.run(config, workdir)
    assert {path: open(path).read() for path in stage_files} == before
    assert json.dumps(again["results"], sort_keys=True) == json.dumps(
        report["results"], sort_keys=True
    )
