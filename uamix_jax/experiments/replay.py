"""Mode 'replay': uaMix-MAE's few-shot gain over its MAE, measured end to end on one data set.

    python main.py --config=configs/replay_soundfont.py --workdir=W

Stages, each in its own folder of W, each resumable and skipped once finished (the jobs
resume from their checkpoints and return at once when done; evaluations are cached):

1. ``soundfont_wavs/``: notes rendered from the SoundFont (uamix_jax.data.soundfont), built
   into ``data/`` (the 'soundfont' layout, fbank storage).
2. ``pretrain/``: MAE pretraining on the clips of the seen classes (labels unused).
3. ``tune/<variant>/seed<k>/``: tuning of that MAE, on the same clips: uaMix-MAE (T-CutMix)
   with each of ``config.seeds``, then each of ``config.ablations`` with the first seed.
4. ``more_pretraining/``: the compute-matched baseline, the MAE pretrained further (a new
   warm-up and cosine schedule) for at least as many model FLOPs as uaMix-MAE's tuning.
5. Evaluation of every encoder on the classes ``config.evaluate_on`` names ('validation'
   while settings are being chosen, 'test' for the final table): N-way K-shot episodes
   (nearest prototype and logistic regression on CL2N features, 95% CI over episodes);
   each class's clips halved into probe-train and probe-test, then linear probes with K
   labelled clips per class and kNN.
6. ``results.md`` / ``results.json`` (also kept as ``results_<classes>.*``), a bar chart of
   the few-shot accuracies with their CIs (``accuracy.png``), a t-SNE picture of the MAE
   and uaMix-MAE (``tsne.png``), and each stage's steps, wall time and model FLOPs.

The jobs are called through their public ``run(config, workdir)`` functions only.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import re
import time
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
from absl import logging
from scipy import stats

from uamix_jax.data import pipeline, soundfont, sources
from uamix_jax.evaluation import compare, plots
from uamix_jax.evaluation import embeddings as embeddings_lib
from uamix_jax.evaluation.fewshot import evaluate_episodes
from uamix_jax.evaluation.knn import knn_evaluate
from uamix_jax.evaluation.linear_probe import kshot_probe
from uamix_jax.models import audiomae

# The jobs whose public run(config, workdir) the stages call.
JOB_MODULES = {"pretrain": "uamix_jax.jobs.pretrain", "tune": "uamix_jax.jobs.tune"}
CLASS_SETS = ("seen", "validation", "test")
MAIN, BASELINE, MATCHED = "uaMix-MAE", "MAE", "MAE + more pretraining"
# Reference rows: what an untrained encoder and plain log-mel statistics give.
RANDOM_INIT, LOG_MEL = "random-init encoder", "log-mel mean+std (no learning)"
STAGE_FILE = "replay_stage.json"  # a finished stage's steps and wall time, in its folder
WAVS_DIR, DATA_DIR = "soundfont_wavs", "data"
MAIN_METRIC = "5way-5shot/prototype"


def _job(name: str):
    return importlib.import_module(JOB_MODULES[name])


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _read_json(path: str) -> Any:
    if not os.path.isfile(path):
        return None
    with open(path) as file:
        return json.load(file)


def _write_json(path: str, value: Any) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w") as file:
        json.dump(value, file, indent=1, default=str)
    os.replace(temporary, path)


# --- configuration ------------------------------------------------------------------------


def check_config(config: ml_collections.ConfigDict, num_classes: int | None = None) -> None:
    """Raises ValueError naming the first bad field: class sets, evaluate_on, seeds."""
    sets = {name: tuple(config.classes[name]) for name in CLASS_SETS}
    for name, classes in sets.items():
        if not classes:
            raise ValueError(f"config.classes.{name} is empty")
        if len(set(classes)) != len(classes):
            raise ValueError(f"config.classes.{name} repeats a class")
        if num_classes is not None and not all(0 <= c < num_classes for c in classes):
            raise ValueError(
                f"config.classes.{name} holds classes outside the {num_classes} of the data set"
            )
    for i, first in enumerate(CLASS_SETS):
        for second in CLASS_SETS[i + 1 :]:
            shared = sorted(set(sets[first]) & set(sets[second]))
            if shared:
                raise ValueError(f"config.classes.{first} and .{second} share classes {shared}")
    if config.evaluate_on not in ("validation", "test"):
        raise ValueError(
            f"config.evaluate_on={config.evaluate_on!r}: expected 'validation' or 'test'"
        )
    if len(sets[config.evaluate_on]) < config.eval.n_way:
        raise ValueError(
            f"{config.eval.n_way}-way episodes need at least {config.eval.n_way} classes in "
            f"config.classes.{config.evaluate_on}"
        )
    if not config.seeds:
        raise ValueError("config.seeds is empty: uaMix-MAE needs at least one tuning seed")


def _set_field(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    if leaf not in node:
        raise ValueError(f"ablation field {dotted!r} is not a field of config.tune")
    node[leaf] = value


def tunings(config: ml_collections.ConfigDict) -> list[tuple[str, int, tuple]]:
    """(name, seed, overrides) of every tuning run: uaMix-MAE per seed, ablations on the first."""
    runs = [(MAIN, seed, ()) for seed in config.seeds]
    runs += [(name, config.seeds[0], tuple(overrides)) for name, overrides in config.ablations]
    return runs


def run_name(name: str, seed: int, config: ml_collections.ConfigDict) -> str:
    """The encoder's name in the tables: uaMix-MAE runs carry their seed when there are several."""
    return f"{name} (seed {seed})" if name == MAIN and len(config.seeds) > 1 else name


# --- model FLOPs --------------------------------------------------------------------------


def _block_flops(tokens: int, dim: int, mlp_ratio: float) -> int:
    """Multiply-add FLOPs (2 per MAC) of one transformer block's forward pass on one clip."""
    hidden = int(dim * mlp_ratio)
    return 2 * tokens * dim * (4 * dim + 2 * hidden) + 4 * tokens * tokens * dim


def _patches(encoder: audiomae.AudioMAEConfig) -> int:
    return (encoder.target_length // encoder.patch_size) * (
        encoder.num_mel_bins // encoder.patch_size
    )


def pretrain_step_flops(encoder: audiomae.AudioMAEConfig, model: Mapping, batch: int,
                        mask_ratio: float) -> int:  # fmt: skip
    """Model FLOPs of one MAE step (matmuls only, backward = 2x forward): the encoder on the
    visible patches, the decoder on all of them, every part trained."""
    patches = _patches(encoder)
    visible = int(round(patches * (1 - mask_ratio)))
    embed = 2 * patches * encoder.embed_dim * encoder.patch_size**2
    encoder_flops = embed + encoder.depth * _block_flops(
        visible + 1, encoder.embed_dim, encoder.mlp_ratio
    )
    width = model["decoder_embed_dim"]
    decoder_flops = (
        2 * (visible + 1) * encoder.embed_dim * width
        + model["decoder_depth"] * _block_flops(patches + 1, width, encoder.mlp_ratio)
        + 2 * patches * width * encoder.patch_size**2
    )
    return 3 * batch * (encoder_flops + decoder_flops)


def tune_step_flops(encoder: audiomae.AudioMAEConfig, method: Mapping, batch: int,
                    trainable_blocks: int) -> int:  # fmt: skip
    """Model FLOPs of one tuning step (matmuls only, backward = 2x forward): two clean views
    and, with mixing, a mixed one through the encoder (only the trainable top blocks run
    backward), the projector and predictor on every view, the EMA projector on the clean
    views and the queue lookup."""
    views = 2 if method["mix"] == "none" else 3
    clips = views * batch
    tokens, dim = _patches(encoder) + 1, encoder.embed_dim
    block = _block_flops(tokens, dim, encoder.mlp_ratio)
    embed = 2 * (tokens - 1) * dim * encoder.patch_size**2
    encoder_flops = clips * (embed + encoder.depth * block + 2 * trainable_blocks * block)
    hidden, out = method["proj_hidden_dim"], method["output_dim"]
    projector = 2 * (dim * hidden + hidden * hidden + hidden * out)
    predictor = 2 * 2 * out * method["pred_hidden_dim"]
    ema = 2 * batch * projector if method["ema_decay"] else 0
    lookup = 2 * 2 * batch * method["queue_size"] * out
    return encoder_flops + 3 * clips * (projector + predictor) + ema + lookup


def tune_run_flops(encoder: audiomae.AudioMAEConfig, tune: ml_collections.ConfigDict,
                   total_steps: int) -> int:  # fmt: skip
    """Model FLOPs of a whole tuning run: each epoch at its stage's trainable blocks."""
    epochs = tune.schedule.num_epochs
    steps_per_epoch = total_steps // epochs
    stages = sorted(tuple(stage) for stage in tune.schedule.stages)
    method = tune.method.to_dict()
    total = 0
    for epoch in range(epochs):
        blocks = [b for start, b in stages if start <= epoch][-1]
        total += steps_per_epoch * tune_step_flops(encoder, method, tune.data.batch_size, blocks)
    return total


# --- stages -------------------------------------------------------------------------------


def _config_digest(config: ml_collections.ConfigDict) -> str:
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run_stage(name: str, job: str, config: ml_collections.ConfigDict, directory: str) -> dict:
    """Runs (or resumes) a job; skips it when it finished with this very config.

    STAGE_FILE keeps the job's result, its config's digest and its wall time, which adds up
    the calls that trained (a call killed mid-way adds nothing). A changed config is handed
    to the job again, which resumes from its checkpoints as it sees fit.
    """
    os.makedirs(directory, exist_ok=True)
    record_path = os.path.join(directory, STAGE_FILE)
    digest = _config_digest(config)
    record = _read_json(record_path) or {"stage": name, "wall_s": 0.0}
    if record.get("config") == digest and os.path.isdir(record["result"]["encoder_dir"]):
        return {**record["result"], "wall_s": record["wall_s"]}
    logging.info("replay: stage %s in %s", name, directory)
    print(f"replay: {name} ({directory})", flush=True)
    start = time.perf_counter()
    result = _job(job).run(config, directory)
    record["wall_s"] += time.perf_counter() - start
    result = {k: v for k, v in result.items() if k in ("step", "loss", "encoder_dir", "mae_dir")}
    record.update(config=digest, result=result)
    _write_json(record_path, record)
    return {**result, "wall_s": record["wall_s"]}


def _data_config(config, workdir: str, classes) -> ml_collections.ConfigDict:
    data = config.tune.data.copy_and_resolve_references()
    data.update(
        dict(
            name="soundfont",
            manual_dir=os.path.join(workdir, WAVS_DIR),
            data_dir=os.path.join(workdir, DATA_DIR),
            classes=tuple(classes),
        )
    )
    return data


def _with_data(stage: ml_collections.ConfigDict, data: ml_collections.ConfigDict):
    """A copy of a stage config reading the replay's data set (its own batch and length)."""
    stage = stage.copy_and_resolve_references()
    for field in ("name", "builder_config", "manual_dir", "data_dir", "split", "classes"):
        stage.data[field] = data[field]
    return stage


def prepare_data(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Renders the notes (once) and builds the data set (once); returns the notes' metadata."""
    start = time.perf_counter()
    notes = {k: tuple(v) if isinstance(v, (list, tuple)) else v
             for k, v in config.notes.to_dict().items()}  # fmt: skip
    notes["seen_classes"] = tuple(config.classes.seen)  # the training programs' dense notes
    metadata = soundfont.write_dataset(
        os.path.join(workdir, WAVS_DIR), config.soundfont or None, **notes
    )
    check_config(config, num_classes=len(metadata["classes"]))
    sources.prepare(_data_config(config, workdir, ()))
    record_path = os.path.join(workdir, DATA_DIR, STAGE_FILE)
    if _read_json(record_path) is None:
        _write_json(record_path, {"stage": "data", "wall_s": time.perf_counter() - start})
    return metadata


def train_all(config: ml_collections.ConfigDict, workdir: str) -> dict[str, dict]:
    """Every training stage; returns {encoder name: stage result with 'encoder_dir'}."""
    seen = _data_config(config, workdir, config.classes.seen)
    encoders = {}
    pretrain_config = _with_data(config.pretrain, seen)
    pretrained = _run_stage("pretrain", "pretrain", pretrain_config,
                            os.path.join(workdir, "pretrain"))  # fmt: skip
    encoders[BASELINE] = {**pretrained, "kind": "pretrain", "seed": pretrain_config.seed}
    for name, seed, overrides in tunings(config):
        tune_config = _with_data(config.tune, seen)
        for dotted, value in overrides:
            _set_field(tune_config, dotted, value)
        tune_config.seed = seed
        tune_config.init_checkpoint = pretrained["encoder_dir"]
        directory = os.path.join(workdir, "tune", _slug(name), f"seed{seed}")
        result = _run_stage(f"tune {name}, seed {seed}", "tune", tune_config, directory)
        encoder = audiomae.read_config(result["encoder_dir"])
        result.update(
            kind="tune",
            variant=name,
            seed=seed,
            flops=tune_run_flops(encoder, tune_config, result["step"]),
            nn_accuracy=_last_metric(directory, "nn_accuracy"),
        )
        encoders[run_name(name, seed, config)] = result
    if config.compute_matched:
        main = encoders[run_name(MAIN, config.seeds[0], config)]
        more = _with_data(config.pretrain, seen)
        more.init_checkpoint = pretrained["mae_dir"]
        steps_per_epoch = pretrained["step"] // config.pretrain.schedule.num_epochs
        step_flops = _pretrain_step_flops(pretrained, config.pretrain)
        more.schedule.num_epochs = max(1, math.ceil(main["flops"] / step_flops / steps_per_epoch))
        result = _run_stage(MATCHED, "pretrain", more, os.path.join(workdir, "more_pretraining"))
        encoders[MATCHED] = {**result, "kind": "pretrain", "seed": more.seed}
    encoders[BASELINE]["flops"] = pretrained["step"] * _pretrain_step_flops(
        pretrained, config.pretrain
    )
    if MATCHED in encoders:
        encoders[MATCHED]["flops"] = encoders[MATCHED]["step"] * _pretrain_step_flops(
            pretrained, config.pretrain
        )
    return encoders


def _pretrain_step_flops(pretrained: Mapping, pretrain: ml_collections.ConfigDict) -> int:
    encoder = audiomae.read_config(pretrained["encoder_dir"])
    return pretrain_step_flops(
        encoder, pretrain.model.to_dict(), pretrain.data.batch_size, pretrain.masking.mask_ratio
    )


def _last_metric(directory: str, key: str) -> float | None:
    """The last logged value of a metric in a job's metrics.jsonl (None if never logged)."""
    path = os.path.join(directory, "metrics.jsonl")
    value = None
    if os.path.isfile(path):
        with open(path) as file:
            for line in file:
                row = json.loads(line) if line.strip() else {}
                value = row.get(key, value)
    return value


# --- evaluation ---------------------------------------------------------------------------


def probe_halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(probe-train rows, probe-test rows): each class's clips shuffled by seed and halved."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == cls))
        train.append(rows[: rows.size // 2])
        test.append(rows[rows.size // 2 :])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def evaluate_features(features: np.ndarray, labels: np.ndarray, settings) -> dict:
    """Few-shot episodes on all clips; probes and kNN from one half of each class to the other.

    Returns {'fewshot': {'<n>way-<k>shot/<classifier>': ...}, 'probe': {'<k>shot': ...},
    'knn': ...}, the structure uamix_jax.evaluation.compare tabulates.
    """
    fewshot = {
        f"{settings.n_way}way-{k}shot/{classifier}": evaluate_episodes(
            features,
            labels,
            settings.n_way,
            k,
            settings.n_query,
            settings.episodes,
            settings.seed,
            classifier,
            settings.feature_transform,
        )
        for k in settings.k_shots
        for classifier in ("prototype", "logreg")
    }
    train, test = probe_halves(labels, settings.seed)
    probe = {
        f"{k}shot": kshot_probe(
            features[train],
            labels[train],
            features[test],
            labels[test],
            k,
            tuple(settings.probe_seeds),
        )  # fmt: skip
        for k in settings.probe_shots
    }
    knn = knn_evaluate(
        features[train], labels[train], features[test], labels[test], settings.knn_k,
        settings.knn_temperature,
    )  # fmt: skip
    return {"fewshot": fewshot, "probe": probe, "knn": knn}


def evaluate_all(config, workdir: str, encoders: Mapping[str, Mapping]) -> tuple[dict, dict]:
    """({encoder: results}, {encoder: SplitEmbeddings}) on the classes config.evaluate_on names.

    Features are cached by encoder weights (uamix_jax.evaluation.embeddings); results by a
    digest of the features and the settings, in eval/<classes>/.
    """
    classes = tuple(config.classes[config.evaluate_on])
    data = _data_config(config, workdir, classes)
    data.batch_size = config.eval.batch_size
    cache = os.path.join(workdir, "eval", config.evaluate_on)
    os.makedirs(cache, exist_ok=True)
    references = {
        RANDOM_INIT: lambda: _random_init_features(
            encoders[BASELINE], data, workdir, config.pretrain.seed, config.eval.readout
        ),
        LOG_MEL: lambda: log_mel_statistics(data),
    }
    results, features = {}, {}
    for name in list(encoders) + list(references):
        if name in encoders:
            model, variables = audiomae.load(
                encoders[name]["encoder_dir"], target_length=data.target_length
            )
            split = embeddings_lib.extract_split(
                model, variables, data, "train", os.path.join(workdir, "embeddings"),
                config.eval.readout,
            )  # fmt: skip
        else:
            split = references[name]()
        digest = hashlib.sha256(split.embeddings.tobytes())
        digest.update(json.dumps(config.eval.to_dict(), sort_keys=True).encode())
        # Keyed by what decides the numbers only, so a renamed encoder reuses its results.
        path = os.path.join(cache, f"{digest.hexdigest()[:16]}.json")
        cached = _read_json(path)
        if cached is None:
            print(f"replay: evaluating {name} on the {config.evaluate_on} classes", flush=True)
            cached = evaluate_features(split.embeddings, np.asarray(split.labels), config.eval)
            _write_json(path, cached)
        results[name], features[name] = cached, split
    return results, features


def _random_init_features(pretrained: Mapping, data, workdir: str, seed: int,
                          readout: str = embeddings_lib.DEFAULT_READOUT):  # fmt: skip
    """Features of an untrained encoder of the MAE's shape: what the architecture gives alone,
    read out as the trained encoders are."""
    encoder_config = audiomae.read_config(pretrained["encoder_dir"]).replace(
        target_length=data.target_length
    )
    model = audiomae.AudioMAEEncoder(encoder_config)
    dummy = np.zeros((1, data.target_length, encoder_config.num_mel_bins), np.float32)
    variables = jax.jit(model.init)(jax.random.PRNGKey(seed), dummy)
    return embeddings_lib.extract_split(
        model, variables, data, "train", os.path.join(workdir, "embeddings"), readout
    )


def log_mel_statistics(data) -> embeddings_lib.SplitEmbeddings:
    """Each clip's log-mel mean and standard deviation over time (256 numbers): no learning,
    a floor any useful encoder should clear."""
    rows, labels, ids = [], [], []
    for batch in pipeline.make_iterator(data, train=False, shard=(0, 1), split="train"):
        fbank = np.asarray(batch["fbank"])
        rows.append(np.concatenate([fbank.mean(axis=1), fbank.std(axis=1)], axis=1))
        labels.append(batch["label"])
        ids.append(batch["id"])
    ids, first = np.unique(np.concatenate(ids), return_index=True)
    return embeddings_lib.SplitEmbeddings(
        np.concatenate(rows).astype(np.float32)[first], np.concatenate(labels)[first], ids
    )


# --- the report ---------------------------------------------------------------------------


def _percent(result: Mapping) -> str:
    value = result["mean"] if "mean" in result else result["value"]
    ci = f" ± {100 * result['ci95']:.1f}" if "ci95" in result else ""
    return f"{100 * value:.1f}{ci}"


def across_seeds(values: list[float]) -> dict:
    """Mean and 95% CI (Student's t, n - 1 degrees of freedom) of per-seed accuracies."""
    values = np.asarray(values, np.float64)
    if values.size < 2:
        return {"mean": float(values.mean()), "ci95": float("nan"), "n": int(values.size)}
    half = stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return {"mean": float(values.mean()), "ci95": float(half), "n": int(values.size)}


def main_pair(config, results: Mapping[str, Mapping]) -> dict:
    """Per few-shot setting: the MAE, uaMix-MAE across seeds, their gap and the targets."""
    seeds = [run_name(MAIN, seed, config) for seed in config.seeds]
    summary = {}
    for metric, baseline in results[BASELINE]["fewshot"].items():
        tuned = across_seeds([results[name]["fewshot"][metric]["mean"] for name in seeds])
        gap = tuned["mean"] - baseline["mean"]
        entry = {
            "MAE": baseline["mean"],
            "MAE_ci95": baseline["ci95"],
            "uaMix-MAE": tuned["mean"],
            "uaMix-MAE_ci95_over_seeds": tuned["ci95"],
            "gap": gap,
            # Non-overlapping intervals: the seeds' interval and the MAE's episode interval.
            "separated": bool(tuned["mean"] - tuned["ci95"] > baseline["mean"] + baseline["ci95"]),
        }
        if MATCHED in results:
            entry["compute_matched"] = results[MATCHED]["fewshot"][metric]["mean"]
        if "no mixing" in results:
            entry["no_mixing"] = results["no mixing"]["fewshot"][metric]["mean"]
        summary[metric] = entry
    return summary


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def _cost_rows(encoders: Mapping[str, Mapping], data_wall: float | None) -> list[str]:
    pretrain_flops = encoders[BASELINE].get("flops") or 0
    rows = ["| stage | steps | wall time | model FLOPs | FLOPs / MAE pretraining |",
            "|---|---|---|---|---|"]  # fmt: skip
    if data_wall is not None:
        rows.append(f"| render notes + build data set | | {_duration(data_wall)} | | |")
    for name, stage in encoders.items():
        flops = stage.get("flops")
        label = "MAE pretraining" if name == BASELINE else name
        rows.append(
            f"| {label} | {stage['step']} | {_duration(stage['wall_s'])} | "
            + (f"{flops:.3g} | {flops / pretrain_flops:.3f} |" if flops else "| |")
        )
    return rows


def _bar_chart(results: Mapping[str, Mapping], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(next(iter(results.values()))["fewshot"])
    names = list(results)
    width = 0.8 / len(names)
    figure, axis = plt.subplots(figsize=(max(8, 1.6 * len(metrics)), 4.5))
    colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for i, name in enumerate(names):
        means = [100 * results[name]["fewshot"][m]["mean"] for m in metrics]
        cis = [100 * results[name]["fewshot"][m]["ci95"] for m in metrics]
        positions = np.arange(len(metrics)) + (i - (len(names) - 1) / 2) * width
        axis.bar(positions, means, width, yerr=cis, capsize=2, label=name,
                 color=colours(i % colours.N))  # fmt: skip
    axis.set_xticks(np.arange(len(metrics)))
    axis.set_xticklabels([m.replace("/", "\n") for m in metrics])
    axis.set_ylabel("accuracy (%), 95% CI")
    axis.set_title(title)
    axis.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(config, workdir: str, encoders, results, features, metadata) -> dict:
    """results.md / results.json, accuracy.png and tsne.png; returns the JSON written."""
    classes = config.evaluate_on
    pair = main_pair(config, results)
    data_record = _read_json(os.path.join(workdir, DATA_DIR, STAGE_FILE)) or {}
    names = [c["name"] for c in metadata["classes"]]
    report = {
        "evaluated_on": classes,
        "classes": {k: [names[i] for i in config.classes[k]] for k in CLASS_SETS},
        "soundfont": {k: metadata[k] for k in ("soundfont", "sha256", "settings")},
        "settings": config.to_dict(),
        "results": results,
        "main_pair": pair,
        "stages": {
            name: {k: stage.get(k) for k in ("step", "wall_s", "flops", "nn_accuracy", "seed")}
            for name, stage in encoders.items()
        },
        "data_wall_s": data_record.get("wall_s"),
    }
    evaluations = [label for label, _ in compare.table_rows(results[BASELINE])]
    lines = [
        f"# uaMix-MAE vs its MAE on SoundFont notes: {classes} classes",
        "",
        f"{len(config.classes[classes])} {classes} classes "
        f"({', '.join(report['classes'][classes])}); notes of {metadata['soundfont']} "
        f"(sha256 {metadata['sha256'][:12]}). Percent, mean ± 95% CI over episodes "
        "(few-shot) or probe seeds.",
        "",
        "| encoder | " + " | ".join(evaluations) + " |",
        "|---|" + "---|" * len(evaluations),
    ]
    for name, result in results.items():
        cells = [_percent(r) for _, r in compare.table_rows(result)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"## MAE vs uaMix-MAE over {len(config.seeds)} tuning seeds", ""]
    lines += ["| few-shot setting | MAE | uaMix-MAE (mean ± 95% CI over seeds) | gap | "
              "CIs apart | MAE + more pretraining | no mixing |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for metric, entry in pair.items():
        matched = entry.get("compute_matched")
        no_mix = entry.get("no_mixing")
        lines.append(
            f"| {metric} | {100 * entry['MAE']:.1f} ± {100 * entry['MAE_ci95']:.1f} | "
            f"{100 * entry['uaMix-MAE']:.1f} ± {100 * entry['uaMix-MAE_ci95_over_seeds']:.1f} | "
            f"{100 * entry['gap']:+.1f} | {'yes' if entry['separated'] else 'no'} | "
            f"{'' if matched is None else f'{100 * matched:.1f}'} | "
            f"{'' if no_mix is None else f'{100 * no_mix:.1f}'} |"
        )
    nn = {n: s.get("nn_accuracy") for n, s in encoders.items() if s.get("nn_accuracy") is not None}
    if nn:
        lines += ["", "Last logged NNCLR queue nearest-neighbour label agreement (seen classes): "
                  + ", ".join(f"{n} {100 * v:.0f}%" for n, v in nn.items()) + "."]  # fmt: skip
    lines += ["", "## Cost", ""] + _cost_rows(encoders, report["data_wall_s"])
    lines += ["", "Model FLOPs count matmuls only, backward = 2x forward (see "
              "uamix_jax/experiments/replay.py); wall times are of this run's machine."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    for suffix in ("", f"_{classes}"):
        with open(os.path.join(workdir, f"results{suffix}.md"), "w") as file:
            file.write(text)
        _write_json(os.path.join(workdir, f"results{suffix}.json"), report)
    _bar_chart(results, os.path.join(workdir, "accuracy.png"),
               f"few-shot accuracy, {classes} classes")  # fmt: skip
    main_name = run_name(MAIN, config.seeds[0], config)
    shown = {BASELINE: features[BASELINE], main_name: features[main_name]}
    labels = np.asarray(shown[BASELINE].labels)
    rows, row_labels = compare.tsne_subset(labels, 20, config.tsne.max_points, config.tsne.seed)
    plots.plot_tsne(
        {name: split.embeddings[rows] for name, split in shown.items()},
        row_labels,
        os.path.join(workdir, "tsne.png"),
        names,
        config.tsne.seed,
    )
    print(text, flush=True)
    return report


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs every stage not yet finished and writes the report; returns its JSON."""
    check_config(config)
    os.makedirs(workdir, exist_ok=True)
    metadata = prepare_data(config, workdir)
    encoders = train_all(config, workdir)
    results, features = evaluate_all(config, workdir, encoders)
    return write_report(config, workdir, encoders, results, features, metadata)
