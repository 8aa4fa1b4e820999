"""hear-eval-kit end to end through uamix_jax.hear_eval, on toy tasks the test writes.

Needs the kit (docs/hear.md, "hear-eval-kit"; TensorFlow, pytorch-lightning), so it skips when
heareval is not importable; .ci/run builds that environment in its own step and runs this file.
The chain is the documented one: toy-tasks, the embedding runner on a random-weight tiny
encoder, the prediction runner with the kit's `faster` grid. Checks: every task gets its
scores file; the scene task of three distinct tones is learnt (top-1 accuracy well above the
1/3 of chance), while the same task with training labels independent of the tones is not, so that an
encoder or a pipeline that loses the audio fails; the event task reaches its test step with
the best epoch's post-processing (hear-eval-kit issue 432) and scores above zero.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("heareval")
pytest.importorskip("tensorflow")

from uamix_jax import hear_eval  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_m(args: list[str], cwd: str) -> None:
    env = dict(os.environ, PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{args[:2]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


def test_grid_allowlist_is_the_kits_grid_objects():
    import torch
    from heareval.predictions import task_predictions as tp

    objects = hear_eval._grid_objects([tp.PARAM_GRID, tp.FASTER_PARAM_GRID])
    assert torch.nn.Identity in objects and torch.optim.Adam in objects
    assert all(callable(o) for o in objects) and 1e-3 not in objects


def test_chain_scores_toy_tasks(tmp_path):
    import jax

    from uamix_jax.models import audiomae

    config = audiomae.preset("tiny", depth=2)
    encoder = audiomae.AudioMAEEncoder(config)
    audiomae.save(str(tmp_path / "ckpt"), config,
                  encoder.init(jax.random.PRNGKey(0), np.zeros((1, 1024, 128), np.float32)))
    _python_m(["uamix_jax.hear_eval", "toy-tasks", "--out", "tasks"], str(tmp_path))
    for name in ("toy_scene", "toy_event"):
        task = tmp_path / "tasks" / name
        metadata = json.loads((task / "task_metadata.json").read_text())
        assert metadata["task_name"] == name and metadata["splits"] == ["train", "valid", "test"]
        for split in metadata["splits"]:
            labels = json.loads((task / f"{split}.json").read_text())
            assert sorted(labels) == sorted(os.listdir(task / "16000" / split)) and len(labels) >= 6
    # The control: the scene task with training labels independent of the tones: clip i of
    # every tone gets label i mod 3, so each tone's clips carry the three labels equally.
    shutil.copytree(tmp_path / "tasks" / "toy_scene", tmp_path / "tasks" / "toy_shuffled")
    meta_path = tmp_path / "tasks" / "toy_shuffled" / "task_metadata.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "task_name": "toy_shuffled"}))
    train_path = tmp_path / "tasks" / "toy_shuffled" / "train.json"
    train = json.loads(train_path.read_text())
    vocabulary = sorted({label for labels in train.values() for label in labels})
    train_path.write_text(json.dumps({
        name: [vocabulary[int(name.rsplit("_", 1)[1].split(".")[0]) % len(vocabulary)]]
        for name in train}))

    _python_m(["uamix_jax.hear_eval", "embed", "uamix_jax.hear", "--model", "ckpt",
               "--tasks-dir", "tasks", "--embeddings-dir", "embeddings",
               "--model-options", '{"framework": "torch"}'], str(tmp_path))
    task_dirs = sorted(glob.glob(str(tmp_path / "embeddings" / "uamix_jax.hear-framework=torch" / "*")))
    assert [os.path.basename(d) for d in task_dirs] == ["toy_event", "toy_scene", "toy_shuffled"]
    _python_m(["uamix_jax.hear_eval", "predict", *task_dirs, "--grid", "faster",
               "--grid-points", "2"], str(tmp_path))

    scores = {os.path.basename(d): json.load(open(os.path.join(d, "test.predicted-scores.json")))["test"]
              for d in task_dirs}
    print(json.dumps({k: {m: round(v, 3) for m, v in s.items() if isinstance(v, float)}
                      for k, s in scores.items()}))
    assert scores["toy_scene"]["test_top1_acc"] >= 0.9
    assert scores["toy_shuffled"]["test_top1_acc"] <= 0.6
    event = scores["toy_event"]
    assert np.isfinite(event["test_segment_1s_er"]) and event["test_event_onset_200ms_fms"] > 0.1
