"""The documented AudioSet-20K sequence (README; docs/tuning.md, 'AudioSet-20K with a
converted AudioMAE ViT-B') on a tiny AudioSet-layout folder: convert an AudioMAE checkpoint,
build the data set, then tune with configs/as20k.py, the job reading only the built data set
(no --config.data.manual_dir, and the source folder deleted)."""

import json
import os
import shutil
import subprocess
import sys

import data_layouts
import numpy as np
import torch
from torch_audiomae_reference import AudioMAEReference

from uamix_jax.models import audiomae
from weights_conversion import convert_audiomae

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_LENGTH = 128  # frames: the converted model's grid, and the clips' crop
TRAIN_CLIPS, BATCH = 8, 4  # one epoch of 2 steps


def _run(*args, cwd=REPO):
    """Runs a documented command; on failure, the assertion shows the end of its stderr."""
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stderr[-6000:]}"
    return result


def test_convert_build_and_tune_without_the_source_folder(tmp_path):
    # A tiny AudioMAE's state dict in the form of AudioMAE's pretrained.pth.
    torch.manual_seed(0)
    reference = AudioMAEReference(
        embed_dim=64, depth=2, num_heads=1, target_length=TARGET_LENGTH
    ).randomize_norms(0)
    torch.save({"model": reference.state_dict()}, tmp_path / "pretrained.pth")  # converted below
    audioset = tmp_path / "audioset"
    data_layouts.write_audioset_as20k(str(audioset), train_clips=TRAIN_CLIPS, eval_clips=2)

    checkpoint, data, workdir = (str(tmp_path / name) for name in ("ckpt", "data", "workdir"))
    # The converter's command line, run in this process (it has imported torch already).
    pth = str(tmp_path / "pretrained.pth")
    assert convert_audiomae.main(["--input", pth, "--output", checkpoint]) == 0
    _run(
        "-m",
        "uamix_jax.data.builders",
        "--layout",
        "audioset",
        "--config",
        "as20k",
        "--manual_dir",
        str(audioset),
        "--data_dir",
        data,
    )
    shutil.rmtree(audioset)  # the job must need only the built data set
    _run(
        "main.py",
        "--config=configs/as20k.py",
        f"--workdir={workdir}",
        f"--config.init_checkpoint={checkpoint}",
        f"--config.data.data_dir={data}",
        # Tiny: 2 steps of 4 clips at 128 frames, one stage tuning both blocks.
        f"--config.data.batch_size={BATCH}",
        "--config.data.num_workers=0",
        f"--config.data.target_length={TARGET_LENGTH}",
        f"--config.data.augment.time_shift={TARGET_LENGTH}",
        "--config.data.augment.freq_mask=16",
        "--config.data.augment.time_mask=16",
        "--config.method.queue_size=8",
        "--config.method.topk=2",
        "--config.method.proj_hidden_dim=32",
        "--config.method.output_dim=16",
        "--config.method.pred_hidden_dim=32",
        "--config.schedule.num_epochs=1",
        "--config.schedule.stages=((0, 2),)",
        "--config.log_every=1",
    )
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    losses = [record["loss"] for record in records if "loss" in record]
    assert len(losses) == TRAIN_CLIPS // BATCH and np.all(np.isfinite(losses))
    # The tuned encoder: the converted one's shape, with the tuned weights.
    model, variables = audiomae.load(os.path.join(workdir, "encoder"))
    assert model.config.embed_dim == 64 and model.config.depth == 2
    _, converted = audiomae.load(checkpoint)
    assert not np.allclose(
        variables["params"]["blocks_1"]["mlp"]["fc2"]["kernel"],
        converted["params"]["blocks_1"]["mlp"]["fc2"]["kernel"],
    )
