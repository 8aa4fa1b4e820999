"""The MAE pretraining step: a tiny model's reconstruction loss falls on the synthetic data."""

import jax
import ml_collections
import numpy as np
import pytest

from uamix_jax import audio
from uamix_jax.data import synthetic
from uamix_jax.models import audiomae, mae
from uamix_jax.pretraining import train_step
from uamix_jax.training import optim, runner

TARGET_LENGTH = 96  # 1 s clips give 98 frames; 6 x 8 patches


@pytest.fixture(scope="module")
def fbanks(tmp_path_factory) -> np.ndarray:
    paths = synthetic.write_dataset(
        str(tmp_path_factory.mktemp("wavs")), num_classes=4, clips_per_class=4, seconds=1.0, seed=0
    )
    return np.stack(
        [
            audio.clip_features(audio.load_audio(p), TARGET_LENGTH, audio.NORM_STATS["audioset"])
            for p in paths
        ]
    )


def tiny_model() -> mae.MaskedAutoencoder:
    encoder = audiomae.preset(
        "tiny", embed_dim=64, depth=2, num_heads=2, target_length=TARGET_LENGTH
    )
    return mae.MaskedAutoencoder(
        mae.MAEConfig(encoder, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)
    )


def run_config(kind: str) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "norm_pix_loss": True,
            "masking": {"kind": kind, "mask_ratio": 0.75, "mask_t_prob": 0.5, "mask_f_prob": 0.25},
            "optim": {
                "base_lr": 5e-3,
                "lr_batch_factor": 1.0,
                "warmup_fraction": 0.1,
                "min_lr": 0.0,
                "b1": 0.9,
                "b2": 0.95,
                "eps": 1e-8,
                "layer_decay": 1.0,
                "grad_clip": None,
                "weight_decay": [(r".*/(bias|scale)", 0.0), (r".*", 1e-4)],
            },
        }
    )


def test_reconstruction_loss_falls_on_synthetic_data(fbanks):
    config, model, steps = run_config("random"), tiny_model(), 120
    tx = optim.make_optimizer(
        config.optim,
        depth=2,
        trainable_blocks=None,
        global_batch=len(fbanks),
        total_steps=steps,
        head_pattern=r"decoder/.*",
    )
    variables = train_step.init_variables(model, config.masking, jax.random.PRNGKey(0))
    state = runner.create_state(
        variables["params"], variables["constants"], tx, jax.random.PRNGKey(1)
    )
    step_fn = jax.jit(runner.make_step(train_step.make_loss(model, config), tx))
    batch = {"fbank": fbanks}
    losses = []
    for _ in range(steps):
        state, metrics = step_fn(state, batch)
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses))
    # Each step draws a new masking, so compare averages over the first and last steps.
    # (Predicting zero for every normalised patch scores about 1.0.)
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5]), losses
    # Encoder and decoder both trained; the fixed positional tables did not move.
    for part in ("encoder", "decoder"):
        moved = jax.tree.map(
            lambda a, b: not np.allclose(a, b),
            variables["params"][part],
            jax.device_get(state.params[part]),
        )
        assert all(jax.tree.leaves(moved)), part
    jax.tree.map(
        np.testing.assert_array_equal, variables["constants"], jax.device_get(state.constants)
    )


def test_unknown_masking_kind_is_named():
    config = run_config("random")
    config.masking.kind = "blocks"
    with pytest.raises(ValueError, match="config.masking.kind"):
        train_step.init_variables(tiny_model(), config.masking, jax.random.PRNGKey(0))
