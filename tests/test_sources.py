"""Data sources: a repr that describes the data (so a killed run resumes, and a run on other
data is refused with both descriptions), and built data sets used without their source."""

import json
import os
import shutil
import subprocess
import sys

import data_layouts
import grain.python as grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from uamix_jax.data import builders, checkpointing, pipeline, sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def folder_config(tmp_path_factory):
    """3 classes x 4 clips of 0.5 s, built as a folder data set; batches of 2 clips."""
    root = tmp_path_factory.mktemp("sources")
    data_layouts.write_folder(str(root / "src"), per_class=4)
    config = pipeline.default_config()
    config.update(
        name="folder",
        manual_dir=str(root / "src"),
        data_dir=str(root / "data"),
        target_length=32,
        batch_size=2,
        classes=(0, 2),
    )
    sources.prepare(config)
    return config


def _with(config, **changes):
    config = config.copy_and_resolve_references()
    config.update(changes)
    return config


def _batches(iterator, count):
    return [next(iterator) for _ in range(count)]


def _assert_same_batches(first, second):
    for batch_a, batch_b in zip(first, second, strict=True):
        for key in batch_a:
            np.testing.assert_array_equal(batch_a[key], batch_b[key])


def _save(directory, iterator, step=1):
    handlers = {checkpointing.ITERATOR_ITEM: grain.PyGrainCheckpointHandler()}
    with ocp.CheckpointManager(directory, item_handlers=handlers) as manager:
        args = {checkpointing.ITERATOR_ITEM: checkpointing.save_args(iterator)}
        manager.save(step, args=ocp.args.Composite(**args))
        manager.wait_until_finished()


def _restore(directory, iterator, step=1):
    handlers = {checkpointing.ITERATOR_ITEM: grain.PyGrainCheckpointHandler()}
    with ocp.CheckpointManager(directory, item_handlers=handlers) as manager:
        args = {checkpointing.ITERATOR_ITEM: checkpointing.restore_args(iterator)}
        return manager.restore(step, args=ocp.args.Composite(**args))


def test_repr_describes_the_data_and_not_the_object(folder_config):
    source, _ = sources.open_source(folder_config, "train")
    assert len(source) == 8
    fields = sources.parse_description(repr(source))
    assert fields == source.describe()
    assert fields["data_set"] == "uamix_folder" and fields["builder_config"] == "default"
    assert fields["split"] == "train" and fields["classes"] == [0, 2]
    assert fields["storage"] == "waveform" and fields["num_classes"] == 3
    assert fields["records"] == 8
    assert "0x" not in repr(source) and folder_config.data_dir not in repr(source)
    everything, _ = sources.open_source(_with(folder_config, classes=()), "train")
    assert everything.describe()["classes"] == "all" and everything.describe()["records"] == 12
    # The kept set is what counts, not the order it was written in.
    reordered, _ = sources.open_source(_with(folder_config, classes=(2, 0)), "train")
    assert repr(reordered) == repr(source)


def test_repr_is_the_same_in_a_fresh_process(folder_config):
    script = """
import json, sys
from uamix_jax.data import pipeline, sources
config = pipeline.default_config()
config.update(json.loads(sys.argv[1]))
reprs = []
for classes in ((0, 2), ()):
    config.classes = classes
    reprs.append(repr(sources.open_source(config, "train")[0]))
print(json.dumps(reprs))
"""
    fields = {key: folder_config[key] for key in ("name", "manual_dir", "data_dir")}
    output = subprocess.run(
        [sys.executable, "-c", script, json.dumps(fields)],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    here = [
        repr(sources.open_source(_with(folder_config, classes=classes), "train")[0])
        for classes in ((0, 2), ())
    ]
    assert json.loads(output.strip().splitlines()[-1]) == here


def test_class_filtered_iterator_resumes_from_an_orbax_checkpoint(folder_config, tmp_path):
    iterator = pipeline.make_iterator(folder_config, train=True, seed=1, shard=(0, 1))
    _batches(iterator, 3)  # 4 steps an epoch: stop inside the first
    _save(tmp_path, iterator)
    expected = _batches(iterator, 4)
    fresh = pipeline.make_iterator(
        folder_config.copy_and_resolve_references(), train=True, seed=1, shard=(0, 1)
    )
    restored = _restore(tmp_path, fresh)[checkpointing.ITERATOR_ITEM]
    _assert_same_batches(_batches(fresh, 4), expected)
    next(restored)  # the restored item iterates too (it is the fresh iterator)


def test_a_copy_of_the_built_data_set_elsewhere_resumes(folder_config, tmp_path):
    iterator = pipeline.make_iterator(folder_config, train=True, seed=1, shard=(0, 1))
    _batches(iterator, 2)
    state = iterator.get_state()
    expected = _batches(iterator, 2)
    shutil.copytree(folder_config.data_dir, tmp_path / "moved")
    moved = _with(folder_config, data_dir=str(tmp_path / "moved"), manual_dir="")
    fresh = pipeline.make_iterator(moved, train=True, seed=1, shard=(0, 1))
    checkpointing.set_state(fresh, state)
    _assert_same_batches(_batches(fresh, 2), expected)


def test_other_classes_are_refused_naming_both_descriptions(folder_config, tmp_path):
    iterator = pipeline.make_iterator(folder_config, train=True, seed=1, shard=(0, 1))
    _batches(iterator, 1)
    _save(tmp_path, iterator)
    # Classes (0, 1) hold as many clips as (0, 2): grain's sampler matches, only the data differs.
    other = pipeline.make_iterator(_with(folder_config, classes=(0, 1)), train=True, seed=1)
    with pytest.raises(checkpointing.DataMismatchError) as raised:
        _restore(tmp_path, other)
    message = str(raised.value)
    assert repr(sources.open_source(folder_config, "train")[0]) in message
    assert repr(sources.open_source(_with(folder_config, classes=(0, 1)), "train")[0]) in message
    assert "differs in: classes: [0, 2] -> [0, 1]" in message
    # The same check for a state held in memory; a changed record count is named as well.
    everything = pipeline.make_iterator(_with(folder_config, classes=()), train=True, seed=1)
    with pytest.raises(checkpointing.DataMismatchError, match='"all"; records: 8 -> 12'):
        checkpointing.set_state(everything, iterator.get_state())


def test_other_split_or_storage_description_is_refused():
    old = sources.DataSource([0] * 4, description={"split": "train", "storage": "waveform"})
    new = sources.DataSource([0] * 4, description={"split": "eval", "storage": "waveform"})
    assert checkpointing.describe_difference(repr(old), repr(new)) == 'split: "train" -> "eval"'
    legacy = "<uamix_jax.data.sources.ClassSubset object at 0x7f00>"
    assert "checkpoint's is not a uamix" in checkpointing.describe_difference(legacy, repr(new))


def test_built_audioset_is_used_without_its_source_folder(tmp_path):
    data_layouts.write_audioset(str(tmp_path / "audioset"))
    command = [
        sys.executable,
        "-m",
        "uamix_jax.data.builders",
        "--layout=audioset",
        "--config=as20k",
        f"--manual_dir={tmp_path / 'audioset'}",
        f"--data_dir={tmp_path / 'data'}",
    ]
    config = pipeline.default_config()
    config.update(
        name="audioset", builder_config="as20k", data_dir=str(tmp_path / "data"), batch_size=2
    )
    config.manual_dir = str(tmp_path / "audioset")
    built = sources.prepare(config)
    shutil.rmtree(tmp_path / "audioset")
    for manual_dir in ("", str(tmp_path / "audioset")):  # unset, or a folder gone since
        config.manual_dir = manual_dir
        report = sources.prepare(config)
        assert report == built and report.num_examples == {"train": 3, "eval": 2}
        source, info = sources.open_source(config, "train")
        assert len(source) == 3 and info.multi_label and info.num_classes == 4
    batch = next(pipeline.make_iterator(config, train=True, seed=0, shard=(0, 1)))
    assert batch["label"].shape == (2, 4)
    # The builder command too reports the built data set instead of reading the source.
    output = subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
    assert "{'train': 3, 'eval': 2}" in output.stdout


def test_unbuilt_data_set_without_its_source_still_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="uamix_audioset: manual_dir ''"):
        builders.build("audioset", manual_dir="", data_dir=str(tmp_path), config="as20k")


def test_built_synthetic_data_set_does_not_write_its_clips_again(tmp_path):
    config = pipeline.default_config()
    config.update(data_dir=str(tmp_path))
    config.synthetic.update(num_classes=2, clips_per_class=2, seconds=0.25)
    built = sources.prepare(config)
    shutil.rmtree(tmp_path / sources.SYNTHETIC_WAVS)
    assert sources.prepare(config) == built
    assert not os.path.exists(tmp_path / sources.SYNTHETIC_WAVS)
