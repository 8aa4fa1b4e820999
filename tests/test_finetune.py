"""Fine-tuning: losses against PyTorch, pretrained-weight transfer, and a tiny end-to-end run."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import finetune_esc50
from configs.eval_common import finetune_recipe
from uamix_jax.data import pipeline
from uamix_jax.evaluation import finetune
from uamix_jax.jobs import finetune as finetune_job
from uamix_jax.models import audiomae
from weights_conversion import convert_audiomae

TINY = audiomae.preset("tiny", embed_dim=64, depth=2, num_heads=2, target_length=128)


def _random_encoder(seed=0, config=TINY):
    return audiomae.AudioMAEEncoder(config).init(jax.random.PRNGKey(seed), jnp.zeros((1, 128, 128)))


def test_losses_match_pytorch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=6)
    multi_hot = (rng.random((6, 5)) < 0.3).astype(np.float32)
    expected_ce = torch.nn.CrossEntropyLoss(label_smoothing=0.1)(
        torch.tensor(logits), torch.tensor(labels)
    )
    expected_bce = torch.nn.BCEWithLogitsLoss()(torch.tensor(logits), torch.tensor(multi_hot))
    ce = finetune.classification_loss(jnp.asarray(logits), jnp.asarray(labels), "softmax_ce", 0.1)
    bce = finetune.classification_loss(jnp.asarray(logits), jnp.asarray(multi_hot), "bce")
    assert float(ce) == pytest.approx(float(expected_ce), rel=1e-5)
    assert float(bce) == pytest.approx(float(expected_bce), rel=1e-5)


def test_init_from_pretrained_copies_the_trunk_and_starts_a_fresh_classifier():
    pretrained = _random_encoder(0)
    classifier = audiomae.AudioMAEEncoder(TINY.replace(final_norm="fc_norm", num_classes=4))
    variables = finetune.init_from_pretrained(classifier, jax.random.PRNGKey(1), pretrained)
    params, source = variables["params"], pretrained["params"]
    np.testing.assert_array_equal(
        params["blocks_1"]["attn"]["qkv"]["kernel"], source["blocks_1"]["attn"]["qkv"]["kernel"]
    )
    np.testing.assert_array_equal(params["cls_token"], source["cls_token"])
    assert "norm" not in params and params["head"]["kernel"].shape == (64, 4)
    np.testing.assert_array_equal(params["fc_norm"]["scale"], np.ones(64))
    assert np.abs(params["head"]["kernel"]).max() < 1e-4  # AudioMAE's std 2e-5 head


def test_fold_splits_hold_out_each_fold_once():
    splits = finetune.fold_splits(5)
    assert [test for _, test in splits] == [f"fold{i}" for i in range(1, 6)]
    assert splits[0][0] == "fold2+fold3+fold4+fold5"


def test_tiny_finetune_runs_and_its_checkpoint_reloads(tmp_path):
    audiomae.save(str(tmp_path / "pretrained"), TINY, _random_encoder(0))
    config = finetune_recipe(
        "synthetic",
        epochs=2,
        warmup_epochs=1,
        batch_size=8,
        weight_decay=0.05,
        loss="softmax_ce",
        metric="accuracy",
        specaugment="esc50",
        label_smoothing=0.1,
        mask_t_prob=0.2,
        mask_f_prob=0.2,
    )
    config.data.data_dir, config.data.target_length = str(tmp_path / "data"), 128
    config.data.synthetic.update(num_classes=4, clips_per_class=8, seconds=1.0)
    config.data.mixup_prob = 0.5  # soft labels through the same loss
    config.init_checkpoint = str(tmp_path / "pretrained")
    config.schedule.steps_per_epoch, config.log_every, config.checkpoint.every_steps = 2, 1, 2
    workdir = str(tmp_path / "run")
    results = finetune_job.run(config, workdir)
    # A rerun resumes from the last checkpoint (the end): nothing to train, same evaluation.
    assert finetune_job.run(config, workdir) == pytest.approx(results, rel=1e-6)

    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(row["loss"]) for row in rows) and "eval/accuracy" in rows[-1]
    assert os.path.exists(os.path.join(workdir, "curves.png"))

    # The saved classifier reproduces the run's own evaluation of the test split.
    model, variables = audiomae.load(os.path.join(workdir, "finetuned"))
    assert model.config.final_norm == "fc_norm" and model.config.num_classes == 4
    logits, labels = [], []
    for batch in pipeline.make_iterator(
        config.data, train=False, shard=(0, 1), split=config.test_split
    ):
        logits.append(model.apply(variables, batch["fbank"]).logits)
        labels.append(batch["label"])
    loss = finetune.classification_loss(
        jnp.concatenate(logits), jnp.concatenate(labels), "softmax_ce"
    )
    assert float(loss) == pytest.approx(results["eval/loss"], rel=1e-5)
    # The classifier form exports to PyTorch (AudioMAE's fc_norm + head keys).
    convert_audiomae.flax_to_torch(
        os.path.join(workdir, "finetuned"), str(tmp_path / "finetuned.pth")
    )
    state = torch.load(str(tmp_path / "finetuned.pth"), weights_only=True)["model"]
    assert (
        state["head.weight"].shape == (4, 64)
        and "fc_norm.weight" in state
        and "norm.weight" not in state
    )
    # Training moved the trunk away from its pretrained weights.
    pretrained_kernel = _random_encoder(0)["params"]["blocks_0"]["mlp"]["fc1"]["kernel"]
    assert not np.allclose(
        variables["params"]["blocks_0"]["mlp"]["fc1"]["kernel"], pretrained_kernel
    )


def test_cross_validation_trains_each_fold_and_averages(tmp_path, monkeypatch):
    calls = []

    def fake_run(config, workdir, train_split, test_split):
        calls.append((os.path.basename(workdir), train_split, test_split))
        return {"eval/loss": 1.0, "eval/accuracy": 0.5 + 0.1 * len(calls)}

    monkeypatch.setattr(finetune_job, "train_and_evaluate", fake_run)
    config = finetune_esc50.get_config()
    assert config.cross_validation_folds == 5
    results = finetune_job.run(config, str(tmp_path))
    assert [call[0] for call in calls] == [f"fold{i}" for i in range(1, 6)]
    assert calls[2][1:] == ("fold1+fold2+fold4+fold5", "fold3")
    accuracies = [0.6, 0.7, 0.8, 0.9, 1.0]
    assert results["eval/accuracy"] == pytest.approx(np.mean(accuracies))
    assert results["eval/accuracy_std"] == pytest.approx(np.std(accuracies))
    stored = json.load(open(tmp_path / "results.json"))
    assert stored["results"]["folds"]["fold5"]["eval/accuracy"] == pytest.approx(1.0)
