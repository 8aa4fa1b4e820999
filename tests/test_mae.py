"""The MAE (encoder on visible tokens + decoder) against a PyTorch re-statement of AudioMAE's
models_mae.py, and its export to / import from AudioMAE's state-dict format."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch import nn
from torch_audiomae_reference import AudioMAEReference, _Block, _Mlp, audiomae_sincos_table

from uamix_jax.models import audiomae, mae, masking
from weights_conversion import convert_audiomae, mae_layout
from weights_conversion.torch_files import read_state_dict

PATCH = 16
# Global decoder on a 4 x 8 patch grid; the local one needs 8 time rows for a shift.
TARGET_LENGTHS = {"global": 64, "local": 128}


class _MetaMlp(nn.Module):
    def __init__(self, heads: int):
        super().__init__()
        self.fc1 = nn.Linear(2, 384)
        self.fc2 = nn.Linear(384, heads)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class _WindowAttention(nn.Module):
    """timm_patch's WindowMultiHeadAttention (scaled cosine attention), re-stated."""

    def __init__(self, dim: int, heads: int, window: tuple):
        super().__init__()
        self.heads, self.area = heads, window[0] * window[1]
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.meta_mlp = _MetaMlp(heads)
        self.tau = nn.Parameter(torch.ones(heads))
        grid = torch.stack(
            torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij")
        ).flatten(1)
        rel = (grid[:, :, None] - grid[:, None, :]).permute(1, 2, 0).reshape(-1, 2).float()
        self.register_buffer("rel_log", torch.sign(rel) * torch.log1p(rel.abs()), persistent=False)

    def forward(self, x, mask):
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        denom = q.norm(dim=-1, keepdim=True) @ k.norm(dim=-1, keepdim=True).transpose(-2, -1)
        attn = (q @ k.transpose(-2, -1)) / denom.clamp(min=1e-6)
        attn = attn / self.tau.clamp(min=0.01).reshape(1, -1, 1, 1)
        attn = attn + self.meta_mlp(self.rel_log).transpose(1, 0).reshape(1, self.heads, n, n)
        if mask is not None:
            attn = (
                attn.view(bw // mask.shape[0], mask.shape[0], self.heads, n, n)
                + mask[None, :, None]
            ).view(bw, self.heads, n, n)
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(bw, n, c))


class _LocalBlock(nn.Module):
    """timm_patch's SwinTransformerBlock (post-norm, cyclic shift, region mask), re-stated."""

    def __init__(self, dim, heads, grid, shift, mlp_ratio, window=(4, 4)):
        super().__init__()
        self.grid, self.shift, self.window = grid, shift, window
        self.attn = _WindowAttention(dim, heads, window)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        mask = None
        if any(shift):
            regions, label = torch.zeros(1, *grid, 1), 0
            for h in (slice(0, -window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
                for w in (
                    slice(0, -window[1]),
                    slice(-window[1], -shift[1]),
                    slice(-shift[1], None),
                ):
                    regions[:, h, w, :] = label
                    label += 1
            labels = self._partition(regions).view(-1, window[0] * window[1])
            mask = (labels[:, None, :] - labels[:, :, None]).ne(0).float() * -100.0
        self.register_buffer("mask", mask, persistent=False)

    def _partition(self, x):
        b, h, w, c = x.shape
        wh, ww = self.window
        x = x.view(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(-1, wh * ww, c)

    def forward(self, x):
        (h, w), (wh, ww), (sh, sw) = self.grid, self.window, self.shift
        b, n, c = x.shape
        y = torch.roll(x.view(b, h, w, c), shifts=(-sh, -sw), dims=(1, 2))
        y = self.attn(self._partition(y), self.mask)
        y = y.view(b, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        y = torch.roll(y, shifts=(sh, sw), dims=(1, 2))
        x = x + self.norm1(y.reshape(b, n, c))
        return x + self.norm2(self.mlp(x))


class MAEReference(AudioMAEReference):
    """AudioMAE's MaskedAutoencoderViT (global decoder_mode 0 or local decoder_mode 1),
    re-stated: the same flat state-dict keys, forward_encoder on given visible indices,
    forward_decoder."""

    def __init__(
        self, decoder_embed_dim, decoder_depth, decoder_num_heads, decoder_mode, **encoder_kwargs
    ):
        super().__init__(final_norm="norm", **encoder_kwargs)
        grid = (encoder_kwargs["target_length"] // PATCH, 128 // PATCH)
        embed_dim, mlp_ratio = encoder_kwargs["embed_dim"], encoder_kwargs.get("mlp_ratio", 4.0)
        self.local = decoder_mode == "local"
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            torch.from_numpy(audiomae_sincos_table(decoder_embed_dim, *grid)), requires_grad=False
        )
        if self.local:
            self.decoder_blocks = nn.ModuleList(
                _LocalBlock(
                    decoder_embed_dim,
                    decoder_num_heads,
                    grid,
                    (0, 0) if i % 2 == 0 else (2, 0),
                    mlp_ratio,
                )
                for i in range(decoder_depth)
            )
        else:
            self.decoder_blocks = nn.ModuleList(
                _Block(decoder_embed_dim, decoder_num_heads, mlp_ratio)
                for _ in range(decoder_depth)
            )
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_embed_dim, PATCH * PATCH)

    def forward(self, fbank, ids_keep, ids_restore):
        x = self.patch_embed(fbank.unsqueeze(1)) + self.pos_embed[:, 1:]
        x = torch.gather(x, 1, ids_keep.unsqueeze(-1).repeat(1, 1, x.shape[-1]))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.decoder_embed(self.norm(x))
        fillers = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:], fillers], dim=1)
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed
        if self.local:
            x = x[:, 1:]
        for block in self.decoder_blocks:
            x = block(x)
        pred = self.decoder_pred(self.decoder_norm(x))
        return pred if self.local else pred[:, 1:]


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


def reference_for(config: mae.MAEConfig) -> MAEReference:
    enc = config.encoder
    return MAEReference(
        config.decoder_embed_dim,
        config.decoder_depth,
        config.decoder_num_heads,
        config.decoder_mode,
        embed_dim=enc.embed_dim,
        depth=enc.depth,
        num_heads=enc.num_heads,
        target_length=enc.target_length,
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
