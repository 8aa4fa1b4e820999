"""Diagnosis of the replay's MAE (docs/replay.md#diagnosis), on the validation programs only.

    python benchmarks/replay_diagnosis.py --workdir=/tmp/diag
    python benchmarks/replay_diagnosis.py --workdir=/tmp/diag_quick --quick

1. Runs (or reuses) the replay's data and MAE pretraining stages at the config's setting,
   with a checkpoint every --every steps.
2. Renders extra notes of the seen programs with another seed, drops every (key, velocity)
   the pretraining read, and measures the reconstruction loss (norm_pix_loss, removed patches
   only, fixed masks) of every checkpoint on them, next to the loss of predicting each
   patch's mean (zero for per-patch normalised targets), computed on the same clips.
3. Counts what the pretraining sees: per 16x16 patch, its level above the clip's quietest
   patch and its spread (a patch whose spread is a fraction of a dB has a normalised target
   that is mostly rounding noise).
4. Few-shot accuracy (5-way 5-shot and 1-shot, nearest prototype, CL2N) of every block's
   readout (uamix_jax.evaluation.embeddings.all_readouts) for the MAE and an untrained encoder
   of its shape (the replay's seed), and of each clip's log-mel mean+std, on the programs
   config.evaluate_on names (validation; the test programs are refused).

Prints the tables; writes W/diagnosis.json and W/diagnosis.png (the loss curves).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import replay_soundfont  # noqa: E402
from uamix_jax import audio  # noqa: E402
from uamix_jax.data import pipeline, soundfont, sources  # noqa: E402
from uamix_jax.evaluation import embeddings  # noqa: E402
from uamix_jax.evaluation.fewshot import evaluate_episodes  # noqa: E402
from uamix_jax.experiments import replay  # noqa: E402
from uamix_jax.models import audiomae, mae  # noqa: E402
from uamix_jax.pretraining import objective  # noqa: E402
from uamix_jax.pretraining import train_step as pretrain_step  # noqa: E402

HELD_OUT_WAVS, HELD_OUT_DATA = "heldout_wavs", "heldout_data"
DB_PER_LOG_UNIT = 10.0 / np.log(10.0)  # Kaldi fbanks are natural logs of power


def pretrain(config, workdir: str, every: int) -> dict:
    """The replay's data and MAE stages (replay.prepare_data, replay._run_stage)."""
    config.pretrain.checkpoint.update(dict(every_steps=every, max_to_keep=100))
    replay.prepare_data(config, workdir)
    seen = replay._data_config(config, workdir, config.classes.seen)
    stage = replay._with_data(config.pretrain, seen)
    result = replay._run_stage("pretrain", "pretrain", stage, os.path.join(workdir, "pretrain"))
    return {**result, "config": stage}


def held_out_data(config, workdir: str, clips_per_class: int):
    """A data config of new notes of the seen programs that the pretraining did not read."""
    notes = {k: tuple(v) if isinstance(v, (list, tuple)) else v
             for k, v in config.notes.to_dict().items()}  # fmt: skip
    notes.update(clips_per_class=clips_per_class, seed=notes["seed"] + 1)
    wavs = os.path.join(workdir, HELD_OUT_WAVS)
    done = os.path.join(wavs, "duplicates_removed")
    if not os.path.exists(done):
        shutil.rmtree(wavs, ignore_errors=True)
        soundfont.write_dataset(wavs, config.soundfont or None, **notes)
        removed = 0
        for folder in os.listdir(wavs):
            trained = os.path.join(workdir, replay.WAVS_DIR, folder)
            if not os.path.isdir(trained):
                continue
            for name in os.listdir(os.path.join(wavs, folder)):
                if os.path.exists(os.path.join(trained, name)):  # the same key and velocity
                    os.remove(os.path.join(wavs, folder, name))
                    removed += 1
        with open(done, "w") as file:
            file.write(f"{removed}\n")
    data = replay._data_config(config, workdir, config.classes.seen)
    data.update(dict(manual_dir=wavs, data_dir=os.path.join(workdir, HELD_OUT_DATA)))
    data.batch_size = config.eval.batch_size
    sources.prepare(data)
    return data


def fbanks_of(data) -> np.ndarray:
    batches = pipeline.make_iterator(data, train=False, shard=(0, 1), split="train")
    rows, ids = [], []
    for batch in batches:
        rows.append(np.asarray(batch["fbank"], np.float32))
        ids.append(np.asarray(batch["id"]))
    _, first = np.unique(np.concatenate(ids), return_index=True)
    return np.concatenate(rows)[first]


def checkpoint_variables(path: str) -> dict:
    import orbax.checkpoint as ocp

    state = ocp.PyTreeCheckpointer().restore(os.path.join(path, "state"))
    return {"params": state["params"], "constants": state["constants"]}


def reconstruction_curve(stage: dict, fbank: np.ndarray, seed: int, batch: int) -> dict:
    """Held-out loss of every checkpoint under one fixed masking per clip, and the loss of
    predicting zero (each patch's mean) for the same targets and masks."""
    pretrain_config = stage["config"]
    model, _ = mae.load(stage["mae_dir"])
    grid = model.config.encoder.grid
    patch = model.config.encoder.patch_size
    masks = [
        pretrain_step.sample_masking(
            pretrain_config.masking, jax.random.PRNGKey(seed + i), batch, grid
        )
        for i in range(0, len(fbank), batch)
    ]
    chunks = [fbank[i : i + batch] for i in range(0, len(fbank), batch)]
    chunks, masks = chunks[:-1] or chunks, masks[:-1] or masks  # whole batches only

    @jax.jit
    def loss(variables, clips, mask):
        return pretrain_step.reconstruction_loss(
            model, variables, clips, mask, pretrain_config.norm_pix_loss
        )[0]

    def zero_loss(clips, mask):
        target = objective.reconstruction_targets(clips, patch, pretrain_config.norm_pix_loss)
        return objective.masked_mse(jnp.zeros_like(target), target, mask.mask)

    baseline = float(np.mean([zero_loss(c, m) for c, m in zip(chunks, masks)]))
    directory = os.path.join(os.path.dirname(stage["mae_dir"]), "checkpoints")
    steps = sorted(int(name) for name in os.listdir(directory) if name.isdigit())
    curve = {}
    for step in steps:
        variables = checkpoint_variables(os.path.join(directory, str(step)))
        curve[step] = float(np.mean([loss(variables, c, m) for c, m in zip(chunks, masks)]))
        print(f"  step {step:5d}: held-out loss {curve[step]:.4f}", flush=True)
    return {"baseline_predict_mean": baseline, "held_out": curve,
            "clips": int(sum(len(c) for c in chunks))}  # fmt: skip


def patch_statistics(fbank: np.ndarray, patch: int, norm: str) -> dict:
    """Per patch: level above the clip's quietest patch, and spread, in dB of the raw fbank."""
    std = audio.NORM_STATS[norm][1]
    raw_db = fbank * 2.0 * std * DB_PER_LOG_UNIT  # an offset does not change differences
    n, t, f = raw_db.shape
    patches = raw_db[:, : t // patch * patch].reshape(n, t // patch, patch, f // patch, patch)
    level = patches.mean(axis=(2, 4))  # (N, time rows, freq columns)
    spread = patches.std(axis=(2, 4))
    above = level - level.min(axis=(1, 2), keepdims=True)
    frame_level = raw_db.mean(axis=2)  # (N, T)
    frame_above = frame_level - frame_level.min(axis=1, keepdims=True)
    return {
        "patches_per_clip": int(level[0].size),
        "grid": list(level.shape[1:]),
        "fraction_within_10db_of_floor": float((above < 10).mean()),
        "fraction_within_20db_of_floor": float((above < 20).mean()),
        "fraction_spread_below_1db": float((spread < 1).mean()),
        "fraction_spread_below_3db": float((spread < 3).mean()),
        "level_above_floor_db_by_time_row": above.mean(axis=(0, 2)).round(1).tolist(),
        "fraction_frames_within_10db_of_floor": float((frame_above < 10).mean()),
        "clip_dynamic_range_db_median": float(np.median(above.max(axis=(1, 2)))),
    }


def per_block_table(config, workdir: str, stage: dict, episodes: int) -> dict:
    if config.evaluate_on != "validation":
        raise ValueError(
            f"config.evaluate_on={config.evaluate_on!r}: the diagnosis chooses settings and "
            "reads the validation programs only"
        )
    data = replay._data_config(config, workdir, config.classes.validation)
    data.batch_size = config.eval.batch_size
    trained, trained_variables = audiomae.load(stage["encoder_dir"], target_length=data.target_length)
    untrained = audiomae.AudioMAEEncoder(trained.config)
    dummy = np.zeros((1, data.target_length, trained.config.num_mel_bins), np.float32)
    untrained_variables = jax.jit(untrained.init)(
        jax.random.PRNGKey(config.pretrain.seed), dummy
    )  # as replay._random_init_features
    readouts = embeddings.all_readouts(trained.config.depth)
    table = {}
    settings = config.eval
    rows = {
        "MAE": (trained, trained_variables),
        "untrained": (untrained, untrained_variables),
    }
    for name, (model, variables) in rows.items():
        features = embeddings.extract_readouts(model, variables, data, "train", readouts)
        for readout, split in features.items():
            table[(name, readout)] = {
                f"5way-{k}shot": evaluate_episodes(
                    split.embeddings, np.asarray(split.labels), settings.n_way, k,
                    settings.n_query, episodes, settings.seed, "prototype",
                    settings.feature_transform,
                )  # fmt: skip
                for k in (1, 5)
            }
    split = replay.log_mel_statistics(data)
    table[("log-mel mean+std", "-")] = {
        f"5way-{k}shot": evaluate_episodes(
            split.embeddings, np.asarray(split.labels), settings.n_way, k, settings.n_query,
            episodes, settings.seed, "prototype", settings.feature_transform,
        )  # fmt: skip
        for k in (1, 5)
    }
    return table


def training_loss(workdir: str) -> dict[int, float]:
    path = os.path.join(workdir, "pretrain", "metrics.jsonl")
    curve = {}
    with open(path) as file:
        for line in file:
            row = json.loads(line) if line.strip() else {}
            if "loss" in row and "step" in row:
                curve[int(row["step"])] = float(row["loss"])
    return curve


def plot(path: str, train: dict, held: dict, baseline: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(list(train), list(train.values()), label="training loss (metrics.jsonl, batch)",
              alpha=0.7)  # fmt: skip
    axis.plot(list(held), list(held.values()), "o-", label="held-out notes of seen programs")
    axis.axhline(baseline, color="k", linestyle="--",
                 label=f"predict each patch's mean ({baseline:.3f})")  # fmt: skip
    axis.set_xlabel("step")
    axis.set_ylabel("norm_pix_loss, removed patches")
    axis.set_title("replay MAE: reconstruction loss")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--quick", action="store_true", help="the replay's ':quick' setting")
    parser.add_argument("--every", type=int, default=100, help="checkpoint every N steps")
    parser.add_argument("--held_out_per_class", type=int, default=12)
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--soundfont", default="", help="config.soundfont ('' = TimGM6mb.sf2)")
    parser.add_argument("--pretrain", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a dotted field of config.pretrain (a Python literal)")
    args = parser.parse_args(argv)
    config = replay_soundfont.get_config("quick" if args.quick else "")
    config.soundfont = args.soundfont
    for override in args.pretrain:
        field, _, value = override.partition("=")
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass  # a bare string
        *parents, leaf = field.split(".")
        node = config.pretrain
        for parent in parents:
            node = node[parent]
        if leaf not in node:
            raise ValueError(f"--pretrain {override}: {field!r} is not a field of config.pretrain")
        node[leaf] = value
    os.makedirs(args.workdir, exist_ok=True)

    stage = pretrain(config, args.workdir, args.every)
    encoder = audiomae.read_config(stage["encoder_dir"])
    held = held_out_data(config, args.workdir, args.held_out_per_class)
    held_fbank = fbanks_of(held)
    seen_fbank = fbanks_of(replay._data_config(config, args.workdir, config.classes.seen))
    print(f"held-out clips of seen programs: {len(held_fbank)}", flush=True)
    curve = reconstruction_curve(stage, held_fbank, seed=1234, batch=config.eval.batch_size)
    train = training_loss(args.workdir)
    stats = patch_statistics(seen_fbank, encoder.patch_size, config.pretrain.data.norm)
    table = per_block_table(config, args.workdir, stage, args.episodes)

    print("\n| step | training loss (logged) | held-out loss |\n|---|---|---|")
    for step, value in curve["held_out"].items():
        logged = train.get(step)
        print(f"| {step} | {'' if logged is None else f'{logged:.4f}'} | {value:.4f} |")
    print(f"predicting each patch's mean (zero), same clips and masks: "
          f"{curve['baseline_predict_mean']:.4f} ({curve['clips']} clips)")  # fmt: skip
    pretrain_config = stage["config"]
    seen_setting = {
        "seen programs": len(config.classes.seen),
        "clips (pretraining)": len(seen_fbank),
        "clip": f"{config.notes.seconds} s, {encoder.target_length} frames x "
        f"{encoder.num_mel_bins} bins, held {config.notes.held} s",
        "patch grid": f"{stats['grid'][0]} x {stats['grid'][1]} of {encoder.patch_size}x"
        f"{encoder.patch_size}",
        "mask ratio": pretrain_config.masking.mask_ratio,
        "encoder": f"{encoder.depth} blocks x {encoder.embed_dim} wide, {encoder.num_heads} heads",
        "decoder": f"{pretrain_config.model.decoder_depth} x {pretrain_config.model.decoder_embed_dim}",
        "batch": pretrain_config.data.batch_size,
        "lr (blr x batch / 256)": pretrain_config.optim.base_lr
        * pretrain_config.data.batch_size / 256,
        "epochs / steps": f"{pretrain_config.schedule.num_epochs} / {stage['step']}",
    }
    print("\n| what the pretraining sees | |\n|---|---|")
    for key, value in {**seen_setting, **stats}.items():
        print(f"| {key} | {value} |")
    print("\n| encoder | readout | 5-way 1-shot | 5-way 5-shot |\n|---|---|---|---|")
    for (name, readout), result in table.items():
        cells = [f"{100 * result[m]['mean']:.1f} ± {100 * result[m]['ci95']:.1f}"
                 for m in ("5way-1shot", "5way-5shot")]  # fmt: skip
        print(f"| {name} | {readout} | {cells[0]} | {cells[1]} |")
    with open(os.path.join(args.workdir, "diagnosis.json"), "w") as file:
        json.dump(
            {
                "reconstruction": curve,
                "training_loss": train,
                "patches": stats,
                "setting": seen_setting,
                "per_block": {f"{n}|{r}": v for (n, r), v in table.items()},
            },
            file,
            indent=1,
            default=str,
        )
    plot(os.path.join(args.workdir, "diagnosis.png"), train, curve["held_out"],
         curve["baseline_predict_mean"])  # fmt: skip
    print(f"wrote {args.workdir}/diagnosis.json and diagnosis.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
