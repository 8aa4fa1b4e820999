"""The Flax AudioMAE encoder against an independent PyTorch re-statement, and its own behaviour."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch_audiomae_reference import AudioMAEReference, audiomae_sincos_table

from uamix_jax.models import audiomae
from uamix_jax.models.cpu_kernels import gelu
from uamix_jax.models.vit_layers import DropPath
from weights_conversion.audiomae_layout import infer_config, state_dict_to_variables

TOLERANCE = 1e-4  # float32, max abs difference (issue 2)
TINY = dict(embed_dim=64, depth=2, num_heads=2, target_length=128)


def test_cpu_gelu_is_torch_exact_gelu_values_and_gradient():
    x = np.linspace(-9.0, 9.0, 2001, dtype=np.float32)
    x_torch = torch.tensor(x, requires_grad=True)
    torch.nn.functional.gelu(x_torch).sum().backward()  # approximate='none': the erf form
    np.testing.assert_allclose(
        gelu(jnp.asarray(x)), torch.nn.functional.gelu(x_torch).detach(), atol=1e-6
    )
    np.testing.assert_allclose(
        jax.grad(lambda v: gelu(v).sum())(jnp.asarray(x)), x_torch.grad, atol=1e-6
    )


def test_bfloat16_cpu_gelu_rounds_once_and_its_gradient_follows_float32():
    x = jnp.linspace(-6.0, 6.0, 4001, dtype=jnp.float32).astype(jnp.bfloat16)
    np.testing.assert_array_equal(gelu(x), gelu(x.astype(jnp.float32)).astype(jnp.bfloat16))
    grad_bf16 = jax.grad(lambda v: gelu(v).astype(jnp.float32).sum())(x)
    grad_f32 = jax.grad(lambda v: gelu(v).sum())(x.astype(jnp.float32))
    assert grad_bf16.dtype == jnp.bfloat16
    np.testing.assert_allclose(grad_bf16.astype(jnp.float32), grad_f32, atol=2e-2, rtol=1e-2)


def _tiny_config(**overrides):
    return audiomae.preset("tiny", **{**TINY, **overrides})


def _fbank(batch, frames, seed=0):
    return np.random.RandomState(seed).randn(batch, frames, 128).astype(np.float32)


def _reference_and_variables(final_norm, num_classes, seed=0):
    torch.manual_seed(seed)
    reference = AudioMAEReference(final_norm=final_norm, num_classes=num_classes, **TINY)
    reference.randomize_norms(seed).eval()
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    config = infer_config(state, num_heads=TINY["num_heads"])
    return reference, config, state_dict_to_variables(state, config)


@pytest.mark.parametrize("kernels", ["stock", "cpu"])
@pytest.mark.parametrize("final_norm,num_classes", [("norm", 0), ("fc_norm", 7)])
def test_tiny_encoder_matches_pytorch_reference(final_norm, num_classes, kernels):
    reference, config, variables = _reference_and_variables(final_norm, num_classes)
    config = config.replace(kernels=kernels)
    assert config.kernels == kernels
    fbank = _fbank(3, config.target_length)
    with torch.no_grad():
        expected = reference(torch.from_numpy(fbank))
    out = audiomae.AudioMAEEncoder(config).apply(variables, fbank)
    assert out.tokens.shape == (3, 1 + config.num_patches, config.embed_dim)
    for name in ("tokens", "pooled", "logits"):
        if expected[name] is None:
            assert getattr(out, name) is None
            continue
        error = np.abs(np.asarray(getattr(out, name)) - expected[name].numpy()).max()
        assert error <= TOLERANCE, f"{name}: max abs error {error}"


def test_patch_tokens_follow_pytorch_order():
    """Token k of the grid is (t, f) = divmod(k, F/p): a spike in one patch lights one token."""
    config = _tiny_config(depth=0)
    model = audiomae.AudioMAEEncoder(config)
    variables = model.init(jax.random.PRNGKey(0), _fbank(1, 128))
    variables["constants"]["pos_embed"] = jnp.zeros_like(variables["constants"]["pos_embed"])
    fbank = np.zeros((1, 128, 128), np.float32)
    fbank[0, 3 * 16 + 5, 6 * 16 + 2] = 100.0  # time patch 3, frequency patch 6
    tokens = np.asarray(model.apply(variables, fbank).tokens)[0, 1:]
    bias = np.asarray(variables["params"]["patch_embed"]["proj"]["bias"])
    changed = np.flatnonzero(np.abs(tokens - bias).max(axis=1) > 1e-3)
    assert changed.tolist() == [3 * 8 + 6]


def test_init_pos_embed_is_audiomae_table():
    config = _tiny_config()
    variables = audiomae.AudioMAEEncoder(config).init(jax.random.PRNGKey(0), _fbank(1, 128))
    assert "pos_embed" not in variables["params"]
    np.testing.assert_allclose(
        variables["constants"]["pos_embed"], audiomae_sincos_table(64, 8, 8), atol=1e-6
    )
    np.testing.assert_allclose(
        audiomae.sincos_pos_embed(768, (64, 8)), audiomae_sincos_table(768, 64, 8), atol=1e-6
    )


def test_adapt_pos_embed_crops_time_like_audiomae():
    # On AudioMAE's table, cropping to a shorter input gives the table of the shorter grid.
    full = audiomae_sincos_table(768, 64, 8)
    for frames in (512, 128):
        adapted = audiomae.adapt_pos_embed(full, (64, 8), (frames // 16, 8))
        np.testing.assert_array_equal(adapted, audiomae_sincos_table(768, frames // 16, 8))
    # On any table: row 1 + a*T + b (AudioMAE's (freq a, time b) layout) survives when b < T'.
    table = np.random.RandomState(0).randn(1, 1 + 6 * 2, 4)
    adapted = audiomae.adapt_pos_embed(table, (6, 2), (4, 2))
    expected_rows = [0] + [1 + a * 6 + b for a in range(2) for b in range(4)]
    np.testing.assert_array_equal(adapted[0], table[0, expected_rows])


@pytest.mark.parametrize("new_grid", [(80, 8), (32, 4)])
def test_adapt_pos_embed_rejects_unsupported_grids(new_grid):
    with pytest.raises(ValueError, match="only a shorter"):
        audiomae.adapt_pos_embed(audiomae_sincos_table(64, 64, 8), (64, 8), new_grid)


@pytest.mark.parametrize("trainable_blocks", [0, 1, 2])
def test_trainable_blocks_stop_gradients_at_the_trunk(trainable_blocks):
    config = _tiny_config(final_norm="fc_norm", num_classes=3)
    model = audiomae.AudioMAEEncoder(config)
    variables = model.init(jax.random.PRNGKey(0), _fbank(1, 128))

    def loss(params):
        out = model.apply(
            {**variables, "params": params}, _fbank(2, 128), trainable_blocks=trainable_blocks
        )
        return jnp.sum(out.logits**2) + jnp.sum(out.pooled**2)

    grads = jax.jit(jax.grad(loss))(variables["params"])
    frozen = {"patch_embed", "cls_token"} | {f"blocks_{i}" for i in range(2 - trainable_blocks)}
    for name, subtree in grads.items():
        magnitudes = [float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(subtree)]
        if name in frozen:
            assert all(m == 0.0 for m in magnitudes), name
        else:
            assert all(m > 0.0 for m in magnitudes), name


def test_masking_keeps_whole_time_rows_and_frequency_columns():
    config = _tiny_config(depth=0, final_norm="fc_norm")  # tokens = masked trunk input
    model = audiomae.AudioMAEEncoder(config)
    fbank = _fbank(2, 128)
    variables = model.init(jax.random.PRNGKey(0), fbank)
    full = np.asarray(model.apply(variables, fbank).tokens)
    masked = np.asarray(
        model.apply(
            variables,
            fbank,
            train=True,
            mask_t_prob=0.25,
            mask_f_prob=0.5,
            rngs={"masking": jax.random.PRNGKey(1)},
        ).tokens
    )
    assert masked.shape == (2, 1 + 6 * 4, 64)  # int(8 * 0.75) rows x int(8 * 0.5) columns
    for clip in range(2):
        np.testing.assert_array_equal(masked[clip, 0], full[clip, 0])
        kept = [
            int(np.flatnonzero((full[clip, 1:] == token).all(axis=1))[0])
            for token in masked[clip, 1:]
        ]
        rows, columns = {k // 8 for k in kept}, {k % 8 for k in kept}
        assert len(rows) == 6 and len(columns) == 4 and len(set(kept)) == 24
    evaluated = model.apply(variables, fbank, train=False, mask_t_prob=0.25, mask_f_prob=0.5)
    np.testing.assert_array_equal(evaluated.tokens, full)


def test_drop_path_drops_whole_samples():
    x = jnp.ones((256, 5, 3))
    y = np.asarray(DropPath(0.25).apply({}, x, False, rngs={"drop_path": jax.random.PRNGKey(0)}))
    per_sample = y.reshape(256, -1)
    assert set(np.unique(per_sample).tolist()) <= {0.0, float(np.float32(1.0) / np.float32(0.75))}
    assert (per_sample.min(axis=1) == per_sample.max(axis=1)).all()
    assert 0.15 < (per_sample[:, 0] == 0).mean() < 0.35
    np.testing.assert_array_equal(DropPath(0.25).apply({}, x, True), x)


def test_train_mode_is_stochastic_and_eval_deterministic():
    config = _tiny_config(drop_path_rate=0.5, dropout_rate=0.1)
    model = audiomae.AudioMAEEncoder(config)
    fbank = _fbank(4, 128)
    variables = model.init(jax.random.PRNGKey(0), fbank)

    @jax.jit
    def train_pooled(rng):
        dropout, drop_path = jax.random.split(rng)
        rngs = {"dropout": dropout, "drop_path": drop_path}
        return model.apply(variables, fbank, train=True, rngs=rngs).pooled

    def run(seed):
        return np.asarray(train_pooled(jax.random.PRNGKey(seed)))

    assert not np.allclose(run(0), run(2))
    np.testing.assert_array_equal(run(0), run(0))
    # In eval mode the rates are inert: same output as a model built without them.
    plain = audiomae.AudioMAEEncoder(config.replace(drop_path_rate=0.0, dropout_rate=0.0))
    np.testing.assert_array_equal(
        model.apply(variables, fbank).pooled, plain.apply(variables, fbank).pooled
    )


def test_remat_leaves_gradients_unchanged():
    config = _tiny_config(depth=1, final_norm="fc_norm", num_classes=2)
    fbank = _fbank(2, 128)
    variables = audiomae.AudioMAEEncoder(config).init(jax.random.PRNGKey(0), fbank)

    def grads(cfg):
        model = audiomae.AudioMAEEncoder(cfg)
        loss = lambda p: jnp.sum(model.apply({**variables, "params": p}, fbank, train=True).logits)
        return jax.jit(jax.grad(loss))(variables["params"])

    plain, remat = grads(config), grads(config.replace(remat=True))
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(remat)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params():
    config = _tiny_config()
    fbank = _fbank(2, 128)
    variables = audiomae.AudioMAEEncoder(config).init(jax.random.PRNGKey(0), fbank)
    low = audiomae.AudioMAEEncoder(config.replace(dtype="bfloat16"))
    assert all(
        x.dtype == jnp.float32
        for x in jax.tree_util.tree_leaves(low.init(jax.random.PRNGKey(0), fbank))
    )
    exact = np.asarray(audiomae.AudioMAEEncoder(config).apply(variables, fbank).pooled)
    approx = low.apply(variables, fbank).pooled
    assert approx.dtype == jnp.float32
    assert np.abs(np.asarray(approx) - exact).max() < 0.05 * np.abs(exact).max()


def test_wrong_input_length_is_a_clear_error():
    model = audiomae.AudioMAEEncoder(_tiny_config())
    with pytest.raises(ValueError, match="target_length=T"):
        model.init(jax.random.PRNGKey(0), _fbank(1, 256))


def test_config_round_trip_and_validation():
    config = audiomae.preset("base", final_norm="fc_norm", num_classes=527)
    assert audiomae.AudioMAEConfig.from_dict(config.to_dict()) == config
    assert (config.embed_dim, config.depth, config.num_heads, config.grid) == (768, 12, 12, (64, 8))
    with pytest.raises(ValueError, match="final_norm"):
        config.replace(final_norm="cls")
    with pytest.raises(ValueError, match="kernels='flash'"):
        config.replace(kernels="flash")
    with pytest.raises(ValueError, match="attention_implementation='flash'"):
        config.replace(attention_implementation="flash")
    with pytest.raises(ValueError, match="needs dtype='bfloat16'"):
        config.replace(attention_implementation="cudnn")
    config.replace(attention_implementation="cudnn", dtype="bfloat16")
    with pytest.raises(ValueError, match="Unknown AudioMAE preset"):
        audiomae.preset("huge-ish")
    with pytest.raises(ValueError, match="Unknown AudioMAEConfig fields"):
        audiomae.AudioMAEConfig.from_dict({**config.to_dict(), "heads": 3})


def test_save_load_round_trip_and_target_length(tmp_path):
    config = _tiny_config(final_norm="fc_norm", num_classes=4)
    fbank = _fbank(2, 128)
    model = audiomae.AudioMAEEncoder(config)
    variables = model.init(jax.random.PRNGKey(3), fbank)
    audiomae.save(tmp_path / "ckpt", config, variables)
    with pytest.raises(FileExistsError):
        audiomae.save(tmp_path / "ckpt", config, variables)
    loaded_model, loaded = audiomae.load(tmp_path / "ckpt")
    assert loaded_model.config == config
    for a, b in zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(loaded)):
        np.testing.assert_array_equal(a, b)
    short_model, short = audiomae.load(tmp_path / "ckpt", target_length=64, dtype="bfloat16")
    assert short_model.config.target_length == 64 and short_model.config.dtype == "bfloat16"
    assert short["constants"]["pos_embed"].shape == (1, 1 + 4 * 8, 64)
    assert short_model.apply(short, fbank[:, :64]).logits.shape == (2, 4)
    with pytest.raises(FileNotFoundError, match="not an audiomae.save checkpoint"):
        audiomae.load(tmp_path)


def test_fine_tuned_base_has_audiomae_parameter_count():
    """AudioMAE's fine-tuned ViT-B (AudioSet, 527 classes) trains 85,659,407 parameters."""
    config = audiomae.preset("base", final_norm="fc_norm", num_classes=527)
    abstract = jax.eval_shape(
        audiomae.AudioMAEEncoder(config).init, jax.random.PRNGKey(0), jnp.zeros((1, 1024, 128))
    )
    assert (
        sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(abstract["params"]))
        == 85_659_407
    )
    assert abstract["constants"]["pos_embed"].shape == (1, 513, 768)


def test_kernels_resolve_on_construction_and_stay_out_of_checkpoints():
    """'auto' becomes the CPU kernels here; how to run is not part of the stored description."""
    config = _tiny_config()
    assert config.kernels == "cpu"  # tests run on the CPU backend (conftest)
    stock = config.replace(kernels="stock", attention_implementation="cudnn", dtype="bfloat16")
    stored = stock.to_dict()
    assert "kernels" not in stored and "attention_implementation" not in stored
    loaded = audiomae.AudioMAEConfig.from_dict(stored)
    assert loaded == stock.replace(kernels="auto", attention_implementation="xla")
    # Configs stored when the attention kernel was chosen by an 'attention' field still load.
    assert audiomae.AudioMAEConfig.from_dict({**config.to_dict(), "attention": "chunked"}) == config
