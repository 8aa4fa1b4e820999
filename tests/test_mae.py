"""The MAE (encoder on visible tokens + decoder) against a PyTorch re-statement of AudioMAE's
models_mae.py, and its export to / import from AudioMAE's state-dict format."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch_mae_reference import reference_for

from uamix_jax.models import audiomae, mae, masking
from weights_conversion import convert_audiomae, mae_layout
from weights_conversion.torch_files import read_state_dict

# Global decoder on a 4 x 8 patch grid; the local one needs 8 time rows for a shift.
TARGET_LENGTHS = {"global": 64, "local": 128}


def torch_state(state: dict) -> dict:
    return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}


def tiny_config(decoder_mode: str) -> mae.MAEConfig:
    encoder = audiomae.preset(
        "tiny", embed_dim=32, depth=2, num_heads=2, target_length=TARGET_LENGTHS[decoder_mode]
    )
    return mae.MAEConfig(
        encoder,
        decoder_embed_dim=16,
        decoder_depth=2,
        decoder_num_heads=2,
        decoder_mode=decoder_mode,
    )


@pytest.fixture(scope="module", params=mae.DECODER_MODES)
def model_and_variables(request):
    """A tiny MAE whose every trainable tensor (norms included) is random, so no mapping hides."""
    config = tiny_config(request.param)
    model = mae.MaskedAutoencoder(config)
    m = masking.random_masking(jax.random.PRNGKey(0), 1, config.encoder.num_patches, 0.75)
    fbank = jnp.zeros((1, config.encoder.target_length, 128))
    variables = jax.jit(model.init)(jax.random.PRNGKey(1), fbank, m.ids_keep, m.ids_restore)
    rng = np.random.default_rng(2)
    params = jax.tree.map(
        lambda x: np.asarray(x) + 0.1 * rng.normal(size=x.shape).astype(np.float32),
        variables["params"],
    )
    return model, {"params": params, "constants": jax.device_get(variables["constants"])}


def test_names_and_shapes_are_audiomae_keys(model_and_variables):
    model, variables = model_and_variables
    exported = mae_layout.mae_variables_to_state_dict(variables, model.config)
    expected = reference_for(model.config).state_dict()
    assert sorted(exported) == sorted(expected)
    for key, tensor in expected.items():
        assert exported[key].shape == tuple(tensor.shape), key
    # The fixed decoder table is AudioMAE's, built on its (freq, time) grid.
    np.testing.assert_allclose(
        exported["decoder_pos_embed"], expected["decoder_pos_embed"].numpy(), atol=1e-6
    )


@pytest.mark.parametrize(
    "make_masking",
    [
        lambda rng, grid: masking.random_masking(rng, 3, grid[0] * grid[1], 0.75),
        lambda rng, grid: masking.random_masking_2d(rng, 3, grid, 0.5, 0.25),
    ],
    ids=["random", "time_freq"],
)
def test_forward_matches_pytorch_restatement(model_and_variables, make_masking):
    model, variables = model_and_variables
    m = make_masking(jax.random.PRNGKey(3), model.config.encoder.grid)
    shape = (3, model.config.encoder.target_length, 128)
    fbank = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    ours = jax.jit(model.apply)(variables, fbank, m.ids_keep, m.ids_restore)

    reference = reference_for(model.config)
    state = mae_layout.mae_variables_to_state_dict(variables, model.config)
    reference.load_state_dict(torch_state(state), strict=True)
    with torch.no_grad():
        expected = reference(
            torch.from_numpy(fbank),
            torch.from_numpy(np.array(m.ids_keep)).long(),
            torch.from_numpy(np.array(m.ids_restore)).long(),
        )
    np.testing.assert_allclose(ours, expected.numpy(), atol=1e-4, rtol=1e-4)


def test_to_torch_and_back_round_trip(model_and_variables, tmp_path):
    model, variables = model_and_variables
    mae.save(tmp_path / "mae", model.config, variables)
    pth = tmp_path / "mae.pth"
    assert (
        convert_audiomae.main(
            ["--to-torch", "--input", str(tmp_path / "mae"), "--output", str(pth)]
        )
        == 0
    )
    # AudioMAE's own model class (re-stated) takes the file strictly: encoder and decoder.
    reference_for(model.config).load_state_dict(torch_state(read_state_dict(pth)), strict=True)

    # Head counts are not in the tensors: this tiny model's are given.
    assert (
        convert_audiomae.main(
            [
                "--with_decoder",
                "--num_heads",
                "2",
                "--decoder_num_heads",
                "2",
                "--input",
                str(pth),
                "--output",
                str(tmp_path / "back"),
            ]
        )
        == 0
    )
    reloaded_model, reloaded = mae.load(tmp_path / "back")
    assert reloaded_model.config == model.config
    assert mae.load(tmp_path / "back", kernels="stock")[0].config.encoder.kernels == "stock"
    jax.tree.map(np.testing.assert_array_equal, reloaded, variables)
    # The encoder half is an ordinary encoder checkpoint for the tuning job.
    _, encoder = audiomae.load(tmp_path / "back" / mae.ENCODER_DIR)
    jax.tree.map(np.testing.assert_array_equal, encoder, mae.encoder_variables(reloaded))


def test_unknown_decoder_mode_is_named():
    with pytest.raises(ValueError, match="decoder_mode"):
        mae.MAEConfig(tiny_config("global").encoder, decoder_mode="swin")
