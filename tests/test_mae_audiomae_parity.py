"""The MAE pretraining against AudioMAE's own recipe, re-stated in PyTorch (torch_mae_reference).

Same random weights, same masking noise: masks, predictions, loss and the gradient of every
parameter (models_mae.py); the optimiser's decay mask, the AdamW trajectory and the lr
schedule (main_pretrain.py, util/lr_sched.py); the initialisation (initialize_weights); the
fbank normalisation of every stage. docs/pretraining.md#faithfulness lists what each checks.
"""

from __future__ import annotations

import types

import jax
import numpy as np
import pytest
import torch
from torch_mae_reference import MAEReference, add_weight_decay, adjust_learning_rate, reference_for

from configs import demo, pretrain_audioset, replay_soundfont
from uamix_jax import audio
from uamix_jax.data import transforms
from uamix_jax.experiments import replay
from uamix_jax.jobs import pretrain as pretrain_job
from uamix_jax.models import audiomae, mae
from uamix_jax.pretraining import train_step as pretrain_step
from uamix_jax.training import optim
from weights_conversion import mae_layout

# float32 on both sides; the largest errors measured are in docs/pretraining.md#faithfulness.
TOLERANCE = 1e-5
BATCH = 3
# (decoder, frames): the replay's 6 x 8 grid, AudioSet's 64 x 8 with both decoders.
CASES = {
    "global-96": ("global", 96),
    "global-1024": ("global", 1024),
    "local-1024": ("local", 1024),
}


def tiny_config(decoder_mode: str, frames: int) -> mae.MAEConfig:
    encoder = audiomae.preset(
        "tiny", embed_dim=64, depth=2, num_heads=4, target_length=frames, kernels="auto"
    )
    return mae.MAEConfig(
        encoder,
        decoder_embed_dim=32,
        decoder_depth=2,
        decoder_num_heads=4,
        decoder_mode=decoder_mode,
    )


def random_variables(model: mae.MaskedAutoencoder, seed: int) -> dict:
    """Initialised, then every trainable tensor moved by noise (norms and tokens included)."""
    enc = model.config.encoder
    ids = np.arange(enc.num_patches, dtype=np.int32)[None]
    fbank = np.zeros((1, enc.target_length, enc.num_mel_bins), np.float32)
    variables = jax.device_get(model.init(jax.random.PRNGKey(seed), fbank, ids[:, :4], ids))
    rng = np.random.default_rng(seed)
    params = jax.tree.map(
        lambda x: x + 0.1 * rng.normal(size=x.shape).astype(np.float32), variables["params"]
    )
    return {"params": params, "constants": variables["constants"]}


def loaded_reference(config: mae.MAEConfig, variables: dict) -> MAEReference:
    reference = reference_for(config)
    state = mae_layout.mae_variables_to_state_dict(variables, config)
    reference.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return reference


def run_config(masking_kind: str) -> types.SimpleNamespace:
    """The fields of a pretraining config the loss reads, as configs/pretrain_audioset.py."""
    config = pretrain_audioset.get_config()
    config.masking.kind = masking_kind
    return config


def same_noise_masking(reference: MAEReference, config, rng: jax.Array, grid):
    """AudioMAE's masking fed the uniform noise our masking draws from the same key."""
    if config.masking.kind == "random":
        noise = jax.random.uniform(rng, (BATCH, grid[0] * grid[1]))
        return reference.random_masking(
            torch.from_numpy(np.array(noise)), config.masking.mask_ratio
        )
    rng_t, rng_f = jax.random.split(rng)
    noise_t = torch.from_numpy(np.array(jax.random.uniform(rng_t, (BATCH, grid[0]))))
    noise_f = torch.from_numpy(np.array(jax.random.uniform(rng_f, (BATCH, grid[1]))))
    return reference.random_masking_2d(
        noise_t, noise_f, config.masking.mask_t_prob, config.masking.mask_f_prob
    )


@pytest.mark.parametrize(
    "case, masking_kind",
    [
        ("global-96", "random"),
        ("global-1024", "time_freq"),
        ("local-1024", "random"),
    ],
)
def test_loss_prediction_and_gradients_match_audiomae(case, masking_kind):
    config = tiny_config(*CASES[case])
    model = mae.MaskedAutoencoder(config)
    variables = random_variables(model, seed=1)
    reference = loaded_reference(config, variables)
    run = run_config(masking_kind)
    enc = config.encoder
    fbank = np.random.default_rng(0).normal(size=(BATCH, enc.target_length, 128))
    fbank = fbank.astype(np.float32)
    rng = jax.random.PRNGKey(7)

    # AudioMAE: masking from noise, forward, norm_pix_loss over the removed patches, backward.
    ids_keep, mask, ids_restore = same_noise_masking(reference, run, rng, enc.grid)
    pred = reference(torch.from_numpy(fbank), ids_keep, ids_restore)
    loss = reference.forward_loss(torch.from_numpy(fbank), pred, mask, norm_pix_loss=True)
    loss.backward()

    # Ours: the training loss of the pretraining step, on the masking drawn from that key.
    ours = pretrain_step.sample_masking(run.masking, rng, BATCH, enc.grid)
    np.testing.assert_array_equal(ours.ids_keep, ids_keep.numpy())
    np.testing.assert_array_equal(ours.ids_restore, ids_restore.numpy())
    np.testing.assert_array_equal(ours.mask, mask.numpy())
    our_loss, our_pred = jax.jit(
        lambda v: pretrain_step.reconstruction_loss(model, v, fbank, ours, run.norm_pix_loss)
    )(variables)
    np.testing.assert_allclose(our_pred, pred.detach().numpy(), atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(our_loss, loss.item(), atol=TOLERANCE, rtol=0)

    if config.decoder_mode == "local":
        # train=True would add the local decoder's meta-MLP dropout: grads at train=False.
        def loss_of(params):
            v = {"params": params, "constants": variables["constants"]}
            return pretrain_step.reconstruction_loss(model, v, fbank, ours, run.norm_pix_loss)[0]
    else:
        loss_fn = pretrain_step.make_loss(model, run)
        state = types.SimpleNamespace(constants=variables["constants"])
        keys = dict(zip(("masking", "dropout", "drop_path"), (rng, *jax.random.split(rng))))

        def loss_of(params):
            return loss_fn(params, state, {"fbank": fbank}, keys)[0]

    step_loss, grads = jax.jit(jax.value_and_grad(loss_of))(variables["params"])
    np.testing.assert_allclose(step_loss, loss.item(), atol=TOLERANCE, rtol=0)
    our_grads = mae_layout.mae_variables_to_state_dict(
        {"params": grads, "constants": variables["constants"]}, config
    )
    frozen = {name for name, p in reference.named_parameters() if p.grad is None}
    assert frozen == {"pos_embed", "decoder_pos_embed"}  # fixed tables, not trained
    for name, param in reference.named_parameters():
        if param.grad is not None:
            expected = param.grad.numpy()
            np.testing.assert_allclose(
                our_grads[name], expected, atol=TOLERANCE, rtol=0, err_msg=name
            )
            # Also relative to the tensor's largest gradient (the encoder's are ~1e-3; the
            # meta-MLP's output bias shifts whole softmax rows, so its gradient is ~0).
            error = np.max(np.abs(our_grads[name] - expected))
            assert error <= 1e-4 * max(np.max(np.abs(expected)), 1e-5), (name, error)


def test_patchify_order_is_audiomae():
    """Patch k = t * F + f; inside a patch time runs first (AudioMAE's 'nchpwq->nhwpqc')."""
    fbank = np.arange(2 * 96 * 128, dtype=np.float32).reshape(2, 96, 128)
    ours = pretrain_step.objective.patchify(fbank, 16)
    np.testing.assert_array_equal(ours, MAEReference.patchify(torch.from_numpy(fbank)).numpy())


def decayed_names(config: mae.MAEConfig, optim_config) -> tuple[set[str], set[str]]:
    """(trained, decayed) AudioMAE tensor names under our optimiser config."""
    rules = [tuple(rule) for rule in optim_config.weight_decay]
    names = {
        "/".join(rule.flax_path[1:]): rule.torch_key
        for rule in mae_layout.mae_rules(config)
        if rule.flax_path[0] == "params"
    }
    abstract = jax.eval_shape(lambda: random_variables(mae.MaskedAutoencoder(config), 0))
    paths = [optim.path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(abstract["params"])]
    assert sorted(paths) == sorted(names)
    decayed = {names[p] for p in paths if optim.first_match(p, rules, 0.0)}
    return set(names.values()), decayed


@pytest.mark.parametrize(
    "name, stage",
    [
        ("pretrain_audioset", lambda: pretrain_audioset.get_config()),
        ("replay_soundfont", lambda: replay_soundfont.get_config().pretrain),
    ],
)
def test_weight_decay_mask_is_timm_add_weight_decay(name, stage):
    """No decay on 1-D tensors and biases; cls_token, mask_token (3-D) and every kernel
    decayed; the fixed pos_embed tables are not trained at all. Both decoders."""
    config = stage()
    for decoder_mode in mae.DECODER_MODES:
        model_config = tiny_config(decoder_mode, 128)
        trained, decayed = decayed_names(model_config, config.optim)
        reference = reference_for(model_config)
        by_id = {id(p): n for n, p in reference.named_parameters()}
        no_decay, decay = add_weight_decay(reference, 1.0)
        expected_decayed = {by_id[id(p)] for p in decay["params"]}
        expected_trained = expected_decayed | {by_id[id(p)] for p in no_decay["params"]}
        assert trained == expected_trained, (name, decoder_mode)
        assert decayed == expected_decayed, (name, decoder_mode, decayed ^ expected_decayed)
        assert {"cls_token", "mask_token"} <= decayed
    # One decay value, AudioMAE's recipe (submit_pretrain_audioset2M.sh: 1e-4).
    assert {value for _, value in config.optim.weight_decay} == {1e-4}


@pytest.mark.parametrize(
    "stage, steps_per_epoch",
    [
        (lambda: pretrain_audioset.get_config(), 7),
        (lambda: replay_soundfont.get_config().pretrain, 100),
    ],
    ids=["pretrain_audioset", "replay_soundfont"],
)
def test_schedule_is_lr_sched_per_iteration(stage, steps_per_epoch):
    """lr = blr * batch / 256, linear warmup from 0 over the warmup epochs, half-cycle cosine
    to min_lr, set before each step from the fractional epoch."""
    config = stage()
    epochs, batch = config.schedule.num_epochs, config.data.batch_size
    warmup_epochs = config.optim.warmup_fraction * epochs
    # A whole number of steps (AudioMAE's warmup is whole epochs; lr_sched works on any).
    warmup_steps = warmup_epochs * steps_per_epoch
    assert warmup_steps == pytest.approx(round(warmup_steps))
    peak = config.optim.base_lr * batch / 256
    schedule = optim.learning_rate_schedule(config.optim, batch, epochs * steps_per_epoch)
    for step in range(epochs * steps_per_epoch):
        expected = adjust_learning_rate(
            step / steps_per_epoch, peak, config.optim.min_lr, warmup_epochs, epochs
        )
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-6 * peak), step


def test_adamw_trajectory_matches_torch_adamw():
    """20 steps of our optimiser against torch.optim.AdamW with AudioMAE's parameter groups
    and per-iteration lr, on shared random gradients. The decay is raised to 0.05
    (main_pretrain.py's default) so that a wrongly masked tensor would show."""
    config = replay_soundfont.get_config().pretrain
    optim_config = config.optim
    optim_config.weight_decay = tuple((regex, 0.05) for regex, _ in optim_config.weight_decay)
    optim_config.warmup_fraction = 0.2
    steps_per_epoch, epochs, batch = 4, 5, config.data.batch_size
    model_config = tiny_config("global", 96)
    variables = random_variables(mae.MaskedAutoencoder(model_config), seed=3)
    reference = loaded_reference(model_config, variables)
    peak = optim_config.base_lr * batch / 256
    groups = add_weight_decay(reference, 0.05)
    torch_opt = torch.optim.AdamW(groups, lr=peak, betas=(optim_config.b1, optim_config.b2))
    assert (optim_config.b1, optim_config.b2, optim_config.eps) == (0.9, 0.95, 1e-8)

    tx = optim.make_optimizer(
        optim_config,
        depth=model_config.encoder.depth,
        trainable_blocks=None,
        global_batch=batch,
        total_steps=epochs * steps_per_epoch,
        head_pattern=pretrain_job.DECODER_PATTERN,
    )
    params = variables["params"]
    opt_state = tx.init(params)
    update = jax.jit(tx.update)
    rng = np.random.default_rng(4)
    for step in range(epochs * steps_per_epoch):
        grads = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), params)
        torch_grads = mae_layout.mae_variables_to_state_dict(
            {"params": grads, "constants": variables["constants"]}, model_config
        )
        lr = adjust_learning_rate(step / steps_per_epoch, peak, 0.0, 1, epochs)
        for group in torch_opt.param_groups:
            group["lr"] = lr
        for name, param in reference.named_parameters():
            if param.requires_grad:
                param.grad = torch.from_numpy(np.array(torch_grads[name]))
        torch_opt.step()
        updates, opt_state = update(grads, opt_state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    ours = mae_layout.mae_variables_to_state_dict(
        {"params": params, "constants": variables["constants"]}, model_config
    )
    for name, param in reference.named_parameters():
        np.testing.assert_allclose(
            ours[name], param.detach().numpy(), atol=TOLERANCE, rtol=0, err_msg=name
        )


@pytest.mark.parametrize("decoder_mode", mae.DECODER_MODES)
def test_initialisation_is_audiomae_initialize_weights(decoder_mode):
    """xavier_uniform on every Linear weight and on the patch conv viewed as (D, p*p); zero
    biases; LayerNorms (1, 0); cls and mask tokens normal(0.02); the local decoder's tau 1."""
    config = tiny_config(decoder_mode, 128)
    model = mae.MaskedAutoencoder(config)
    enc = config.encoder
    ids = np.arange(enc.num_patches, dtype=np.int32)[None]
    fbank = np.zeros((1, enc.target_length, enc.num_mel_bins), np.float32)
    variables = jax.device_get(model.init(jax.random.PRNGKey(0), fbank, ids[:, :4], ids))
    state = mae_layout.mae_variables_to_state_dict(variables, config)
    for name, param in reference_for(config).named_parameters():
        if not param.requires_grad:
            continue
        value = np.asarray(state[name])
        if name in ("cls_token", "mask_token"):
            assert 0.7 * 0.02 < value.std() < 1.3 * 0.02, (name, value.std())
        elif name.endswith(".bias"):
            np.testing.assert_array_equal(value, 0.0, err_msg=name)
        elif value.ndim == 1:  # LayerNorm scales and the local decoder's temperatures
            np.testing.assert_array_equal(value, 1.0, err_msg=name)
        else:
            fan_out, fan_in = value.shape[0], int(np.prod(value.shape[1:]))
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            assert 0.95 * bound < np.abs(value).max() <= bound, (name, np.abs(value).max(), bound)
            assert value.std() == pytest.approx(bound / np.sqrt(3), rel=0.1), name


@pytest.mark.parametrize("setting", ["", "quick"])
def test_fbank_normalisation_is_the_same_in_every_replay_stage(setting, tmp_path):
    """AudioMAE normalises every clip as (fbank - mean) / (2 std) with the AudioSet
    constants (dataset.py, main_pretrain.py's norm_stats); pretraining, tuning and the
    evaluation of the replay read the same, in the pipeline's Features transform."""
    config = replay_soundfont.get_config(setting)
    evaluation = replay._data_config(config, str(tmp_path), config.classes.validation)
    stages = {
        "pretrain": config.pretrain.data,
        "tune": config.tune.data,
        "evaluation": evaluation,
        "demo pretrain": demo.get_config().pretrain.data,
        "demo tune": demo.get_config().tune.data,
    }
    assert {name: data.norm for name, data in stages.items()} == dict.fromkeys(stages, "audioset")
    assert {name: data.augment.norm for name, data in stages.items()} == dict.fromkeys(
        stages, "audioset"
    )
    mean, std = -4.2677393, 4.5689974
    assert audio.NORM_STATS["audioset"] == (mean, std)
    raw = np.random.default_rng(0).normal(-5.0, 4.0, size=(50, 128)).astype(np.float32)
    features = transforms.Features(storage="fbank", target_length=64, stats=(mean, std))
    out = features.map({"signal": raw, "label": 0, "id": 0})["fbank"]
    np.testing.assert_allclose(out[:50], (raw - mean) / (2 * std), rtol=1e-6, atol=1e-6)
    # Zero frames padded onto the raw log-mel, then normalised (dataset.py's order).
    np.testing.assert_allclose(out[50:], -mean / (2 * std), rtol=1e-6)
