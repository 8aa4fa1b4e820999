"""hear-eval-kit (heareval 2021.1.3) runners for `uamix_jax.hear`, with the kit's known defects
worked around at run time; the installed kit is not edited. docs/hear.md gives the chain.

    python -m uamix_jax.hear_eval toy-tasks --out tasks
    python -m uamix_jax.hear_eval embed uamix_jax.hear --model CKPT --tasks-dir tasks ...
    python -m uamix_jax.hear_eval predict embeddings/uamix_jax.hear-framework=torch/* --grid faster

`embed` and `predict` run the kit's own command lines (`heareval.embeddings.runner`,
`heareval.predictions.runner`, same options) after `patch_kit()`:
- torch >= 2.6 loads checkpoints weights-only; the kit's Lightning checkpoints, which the kit
  wrote a moment before in the same run, hold its grid's hyperparameters (torch.nn.Identity,
  BatchNorm1d, the init functions, torch.optim.Adam). Exactly the objects of the kit's grids
  are added to torch's weights-only allowlist: nothing else becomes loadable.
- hear-eval-kit issue 432: before testing, the kit sets `trainer.fit_loop.current_epoch` to
  the best checkpoint's epoch, so that event tasks test with that epoch's post-processing;
  with pytorch-lightning >= 1.6 that assignment does not reach the epoch counter and the test
  looks up the last epoch (`KeyError`). The test step is wrapped so that the counter itself
  holds the best epoch.
- `gpu_max_mem.device_name` calls `.decode` on the GPU name, which current pynvml returns as
  str: it is given a name that is str either way.

`toy-tasks` writes two small synthetic tasks in HEAR's on-disk layout (a scene task and an
event task of tones), for trying the chain and for tests/test_hear_eval_kit.py.

This module is a client of `uamix_jax.hear` and of the kit; nothing in uamix_jax imports it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from typing import Any, Sequence

import numpy as np

SAMPLE_RATE = 16000
_PATCHED = False


def _grid_objects(grids: Sequence[dict]) -> list[Any]:
    """The non-primitive values (classes, functions) of the kit's hyperparameter grids."""
    found: dict[int, Any] = {}
    for grid in grids:
        for values in grid.values():
            for value in values if isinstance(values, (list, tuple)) else [values]:
                if callable(value):
                    found[id(value)] = value
    return list(found.values())


def patch_kit() -> None:
    """Applies the three run-time fixes of the module docstring (once per process)."""
    global _PATCHED
    if _PATCHED:
        return
    import torch
    from heareval import gpu_max_mem
    from heareval.predictions import task_predictions as tp

    grids = [tp.PARAM_GRID, tp.FAST_PARAM_GRID, tp.FASTER_PARAM_GRID]
    grids += list(getattr(tp, "TASK_SPECIFIC_PARAM_GRID", {}).values())
    torch.serialization.add_safe_globals(_grid_objects(grids))

    original_test = tp.task_predictions_test

    @functools.wraps(original_test)
    def test_at_best_epoch(*args, **kwargs):
        grid_point = kwargs["grid_point"] if "grid_point" in kwargs else args[1]
        grid_point.trainer.fit_loop.epoch_progress.current.completed = grid_point.epoch
        return original_test(*args, **kwargs)

    tp.task_predictions_test = test_at_best_epoch

    if torch.cuda.is_available():
        import pynvml

        def device_name(device_index: int = 0) -> str:
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(device_index))
            return name.decode("utf-8") if isinstance(name, bytes) else name

        gpu_max_mem.device_name = device_name
    _PATCHED = True


def _run_click(command, argv: Sequence[str]) -> int:
    try:
        command.main(args=list(argv), prog_name=command.name, standalone_mode=False)
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


def embed(argv: Sequence[str]) -> int:
    """The kit's embedding runner (`heareval.embeddings.runner`), patched."""
    patch_kit()
    from heareval.embeddings import runner

    return _run_click(runner.runner, argv)


def predict(argv: Sequence[str]) -> int:
    """The kit's prediction runner (`heareval.predictions.runner`), patched."""
    patch_kit()
    from heareval.predictions import runner

    return _run_click(runner.runner, argv)


# --- toy tasks ---------------------------------------------------------------------------

TONES_HZ = (300.0, 1200.0, 4000.0)


def _tone(freq: float, n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    return 0.3 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))


def _write_task(task_dir: str, metadata: dict, labels: list[str], splits: dict) -> None:
    import soundfile

    os.makedirs(task_dir, exist_ok=True)
    with open(os.path.join(task_dir, "task_metadata.json"), "w") as f:
        json.dump(metadata, f, indent=2)
    with open(os.path.join(task_dir, "labelvocabulary.csv"), "w") as f:
        f.write("idx,label\n" + "".join(f"{i},{name}\n" for i, name in enumerate(labels)))
    for split, clips in splits.items():
        audio_dir = os.path.join(task_dir, str(SAMPLE_RATE), split)
        os.makedirs(audio_dir, exist_ok=True)
        split_labels = {}
        for name, audio, label in clips:
            soundfile.write(os.path.join(audio_dir, name), audio.astype(np.float32), SAMPLE_RATE)
            split_labels[name] = label
        with open(os.path.join(task_dir, f"{split}.json"), "w") as f:
            json.dump(split_labels, f, indent=1)


def write_toy_tasks(out: str, clips_per_class: int = 8, seed: int = 0) -> list[str]:
    """Writes `toy_scene` and `toy_event` under `out` in HEAR's layout; returns their paths.

    toy_scene: 1-s clips, each a tone of one of TONES_HZ in faint noise, multiclass top-1.
    toy_event: 2-s clips of faint noise holding one 0.5-0.8 s tone of one of TONES_HZ at a
    random onset; multilabel events scored with onset F-measure (200 ms collar).
    Splits train/valid/test hold clips_per_class, half and half as many clips per class.
    """
    rng = np.random.default_rng(seed)
    labels = [f"tone{int(f)}" for f in TONES_HZ]
    counts = {"train": clips_per_class, "valid": max(2, clips_per_class // 2),
              "test": max(2, clips_per_class // 2)}
    # The kit's grid draws learning rates down to 1e-4 with 10 epochs, which learn nothing from
    # a few dozen clips; a task's metadata may narrow the grid (the kit's own mechanism).
    grid = {"lr": [1e-2], "max_epochs": [30], "patience": [10]}
    common = {"version": "toy", "split_mode": "trainvaltest", "splits": list(counts),
              "evaluation_params": {"task_specific_param_grid": grid}}
    scene, event = {}, {}
    for split, count in counts.items():
        scene[split], event[split] = [], []
        for k, freq in enumerate(TONES_HZ):
            for i in range(count):
                n = SAMPLE_RATE
                audio = _tone(freq, n, rng) + 0.01 * rng.standard_normal(n)
                scene[split].append((f"{split}_{k}_{i}.wav", audio, [labels[k]]))
                n = 2 * SAMPLE_RATE
                audio = 0.01 * rng.standard_normal(n)
                length = int(rng.uniform(0.5, 0.8) * SAMPLE_RATE)
                onset = int(rng.uniform(0.1, 1.9 - length / SAMPLE_RATE) * SAMPLE_RATE)
                audio[onset:onset + length] += _tone(freq, length, rng)
                event[split].append((f"{split}_{k}_{i}.wav", audio, [
                    {"label": labels[k], "start": 1000.0 * onset / SAMPLE_RATE,
                     "end": 1000.0 * (onset + length) / SAMPLE_RATE}]))
    paths = [os.path.join(out, "toy_scene"), os.path.join(out, "toy_event")]
    _write_task(paths[0], {**common, "task_name": "toy_scene", "embedding_type": "scene",
                           "prediction_type": "multiclass", "sample_duration": 1.0,
                           "evaluation": ["top1_acc"]}, labels, scene)
    _write_task(paths[1], {**common, "task_name": "toy_event", "embedding_type": "event",
                           "prediction_type": "multilabel", "sample_duration": 2.0,
                           "evaluation": ["event_onset_200ms_fms", "segment_1s_er"]},
                labels, event)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = ("toy-tasks", "embed", "predict")
    if not argv or argv[0] not in commands:
        print(f"usage: python -m uamix_jax.hear_eval {{{','.join(commands)}}} ...\n"
              "embed and predict take the options of heareval's runners (--help).",
              file=sys.stderr)
        return 2
    if argv[0] == "toy-tasks":
        parser = argparse.ArgumentParser(prog="python -m uamix_jax.hear_eval toy-tasks")
        parser.add_argument("--out", required=True, help="folder for toy_scene/ and toy_event/")
        parser.add_argument("--clips_per_class", type=int, default=8)
        parser.add_argument("--seed", type=int, default=0)
        args = parser.parse_args(argv[1:])
        for path in write_toy_tasks(args.out, args.clips_per_class, args.seed):
            print(path)
        return 0
    return (embed if argv[0] == "embed" else predict)(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
