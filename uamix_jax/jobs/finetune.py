"""Mode 'finetune': AudioMAE's supervised fine-tuning recipes, data parallel, resumable.

Every parameter trains (AdamW, layer-wise lr decay, warmup + half-cycle cosine); the test
split is evaluated every ``config.eval_every_epochs`` epochs. The classifier is saved with
`audiomae.save` to ``workdir/finetuned``, so it reloads with `audiomae.load` and converts
to PyTorch like any other checkpoint. With ``config.cross_validation_folds = n`` (ESC-50)
the run repeats over the data set's 'fold1' ... 'foldn' splits, each held out once, and
reports the mean over folds.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from uamix_jax.data import pipeline, sources
from uamix_jax.evaluation import finetune, plots
from uamix_jax.models import audiomae
from uamix_jax.training import monitor, optim, runner, sharding

CLASSIFIER_DIR, RESULTS_FILE, CURVES_FILE = "finetuned", "results.json", "curves.png"


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, train_split: str, test_split: str
) -> dict[str, float]:
    """One fine-tuning run: train on ``train_split``, evaluate on ``test_split``.

    Resumes from ``workdir/checkpoints``. Writes ``workdir/metrics.jsonl``,
    ``workdir/curves.png`` and the classifier. Returns the final evaluation.
    """
    mesh = sharding.make_mesh()
    batch = config.data.batch_size
    if batch % mesh.size:
        raise ValueError(
            f"config.data.batch_size={batch} must be a multiple of the {mesh.size} devices"
        )
    num_clips = runner.prepare_data(config.data, train_split)
    info = sources.open_source(config.data, train_split)[1]
    model, pretrained = finetune.build_classifier(config, config.num_classes or info.num_classes)
    steps_per_epoch = config.schedule.steps_per_epoch or runner.steps_per_epoch(
        num_clips, batch, train_split
    )
    total_steps = config.schedule.num_epochs * steps_per_epoch
    tx = optim.make_optimizer(
        config.optim,
        depth=model.config.depth,
        trainable_blocks=None,
        global_batch=batch,
        total_steps=total_steps,
    )
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = finetune.init_from_pretrained(model, init_rng, pretrained)
    # Logits come back replicated, so every host can read them (multi-host included).
    eval_step = jax.jit(
        finetune.make_eval_step(model),
        in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
        out_shardings=sharding.replicated(mesh),
    )

    def evaluate(state: runner.TrainState) -> dict[str, float]:
        # Every host reads the whole test split and keeps its own rows of the replicated
        # logits: redundant on multi-host runs, but needs no gather.
        batches = pipeline.make_iterator(config.data, train=False, shard=(0, 1), split=test_split)
        return finetune.evaluate(eval_step, state, batches, batch, mesh, config)

    def eval_due(step: int) -> bool:
        epoch, into_epoch = divmod(step, steps_per_epoch)
        return into_epoch == 0 and (epoch % config.eval_every_epochs == 0 or step == total_steps)

    task = runner.Task(
        total_steps=total_steps,
        global_batch=batch,
        batch_keys=("fbank", "label"),
        init_state=lambda stage: runner.create_state(
            {"encoder": variables["params"]}, variables["constants"], tx, state_rng
        ),
        compile_step=lambda stage: runner.jit_step(
            runner.make_step(finetune.make_loss(model, config), tx), mesh
        ),
        learning_rate=optim.learning_rate_schedule(config.optim, batch, total_steps),
        eval_due=eval_due,
        evaluate=evaluate,
        loss_name="fine-tuning loss",
    )
    iterator = pipeline.make_iterator(
        config.data,
        train=True,
        seed=config.seed,
        split=train_split,
        shard=(jax.process_index(), jax.process_count()),
    )
    state, record = runner.train(task, config, workdir, mesh, iterator)
    evaluation = {k: v for k, v in record.items() if k.startswith("eval/")} or evaluate(state)
    classifier = jax.device_get(
        {"params": state.params["encoder"], "constants": state.constants}
    )

    def export():
        audiomae.save(
            os.path.join(workdir, CLASSIFIER_DIR), model.config, classifier, overwrite=True
        )
        plots.plot_training_curves(
            os.path.join(workdir, "metrics.jsonl"), os.path.join(workdir, CURVES_FILE)
        )

    runner.on_host_0("classifier saved", export)
    return evaluation


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Fine-tunes per ``config`` (see configs/finetune_*.py); writes workdir/results.json."""
    config = runner.resolve_paths(config, workdir)
    if config.loss not in finetune.LOSSES:
        raise ValueError(f"config.loss={config.loss!r}: expected one of {finetune.LOSSES}")
    if config.metric not in ("mAP", "accuracy"):
        raise ValueError(f"config.metric={config.metric!r}: expected 'mAP' or 'accuracy'")
    os.makedirs(workdir, exist_ok=True)
    if config.cross_validation_folds:
        runs = {
            test: train_and_evaluate(config, os.path.join(workdir, test), train, test)
            for train, test in finetune.fold_splits(config.cross_validation_folds)
        }
        key = f"eval/{config.metric}"
        values = np.array([result[key] for result in runs.values()])
        results = {"folds": runs, key: float(values.mean()), f"{key}_std": float(values.std())}
    else:
        results = train_and_evaluate(config, workdir, config.train_split, config.test_split)

    def write():
        with open(os.path.join(workdir, RESULTS_FILE), "w") as file:
            json.dump({"results": results, "config": config.to_dict()}, file, indent=2, default=str)

    runner.on_host_0("fine-tuning results written", write)
    monitor.announce(f"fine-tuning results: {results}")
    return results
