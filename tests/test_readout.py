"""Per-block readouts of the encoder (uamix_jax.evaluation.embeddings.readout_embeddings)
against the encoder's own outputs and a forward pass written out block by block."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from uamix_jax.evaluation import embeddings
from uamix_jax.models import audiomae
from uamix_jax.models.vit_layers import Block, PatchEmbed

CONFIG = audiomae.preset("tiny", embed_dim=32, depth=3, num_heads=2, target_length=32)
TOLERANCE = 1e-5  # float32, the same layers composed in the same order


@pytest.fixture(scope="module")
def encoder():
    model = audiomae.AudioMAEEncoder(CONFIG)
    fbank = np.random.default_rng(0).normal(size=(5, 32, CONFIG.num_mel_bins)).astype(np.float32)
    variables = model.init(jax.random.PRNGKey(1), fbank[:1])
    # A non-trivial final norm, so a readout that forgets (or doubles) it cannot pass.
    norm = variables["params"]["norm"]
    variables["params"]["norm"] = {
        "scale": norm["scale"] + jnp.linspace(-0.5, 0.5, CONFIG.embed_dim),
        "bias": norm["bias"] + jnp.linspace(0.3, -0.3, CONFIG.embed_dim),
    }
    return model, variables, fbank


def manual_tokens(variables, fbank, blocks):
    """Tokens (B, 1+N, D) after `blocks` blocks (0: patch + positional embedding, cls first)."""
    params = variables["params"]
    pos_embed = variables["constants"]["pos_embed"]
    x = PatchEmbed(CONFIG.embed_dim, CONFIG.patch_size, jnp.float32).apply(
        {"params": params["patch_embed"]}, fbank
    )
    x = x + pos_embed[:, 1:]
    cls = jnp.broadcast_to(params["cls_token"] + pos_embed[:, :1], (x.shape[0], 1, x.shape[2]))
    x = jnp.concatenate([cls, x], axis=1)
    for i in range(blocks):
        block = Block(CONFIG.num_heads, CONFIG.mlp_ratio, 0.0, 0.0, jnp.float32, CONFIG.kernels,
                      CONFIG.attention_implementation)  # fmt: skip
        x = block.apply({"params": params[f"blocks_{i}"]}, x, True)
    return np.asarray(x)


def layer_norm(x, scale, bias):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-6) * np.asarray(scale) + np.asarray(bias)


def test_last_block_readouts_are_the_encoders_outputs(encoder):
    model, variables, fbank = encoder
    output = model.apply(variables, fbank)
    last = f"block{CONFIG.depth}"
    readouts = ("mean_patch", "cls", f"{last}:mean_patch", f"{last}:cls_prenorm")
    got = embeddings.readout_embeddings(model, variables, fbank, readouts, 2)
    np.testing.assert_allclose(got["mean_patch"], output.pooled, atol=TOLERANCE)
    np.testing.assert_allclose(got["cls"], output.tokens[:, 0], atol=TOLERANCE)
    # Without a block index the readout is the last block's.
    np.testing.assert_array_equal(got[f"{last}:mean_patch"], got["mean_patch"])
    assert not np.allclose(got[f"{last}:cls_prenorm"], got["cls"], atol=1e-3)


def test_block_k_readout_is_a_forward_through_k_blocks(encoder):
    model, variables, fbank = encoder
    readouts = embeddings.all_readouts(CONFIG.depth)
    assert len(readouts) == 4 * (CONFIG.depth + 1)
    got = embeddings.readout_embeddings(model, variables, fbank, readouts, 4)  # 4 + padded 1
    norm = variables["params"]["norm"]
    for k in range(CONFIG.depth + 1):
        tokens = manual_tokens(variables, fbank, k)
        normed = layer_norm(tokens, norm["scale"], norm["bias"])
        expected = {
            "mean_patch_prenorm": tokens[:, 1:].mean(1),
            "cls_prenorm": tokens[:, 0],
            "mean_patch": normed[:, 1:].mean(1),
            "cls": normed[:, 0],
        }
        for pooling, value in expected.items():
            np.testing.assert_allclose(
                got[f"block{k}:{pooling}"], value, atol=TOLERANCE, err_msg=f"block{k}:{pooling}"
            )
    last = f"block{CONFIG.depth}"
    assert not np.allclose(got[f"{last}:mean_patch"], got[f"{last}:mean_patch_prenorm"], atol=1e-3)


def test_bad_readouts_name_what_is_wrong():
    assert embeddings.parse_readout("cls", 4) == (4, "cls")
    assert embeddings.parse_readout("block0:mean_patch_prenorm", 4) == (0, "mean_patch_prenorm")
    with pytest.raises(ValueError, match="k in \\[0, 4\\]"):
        embeddings.parse_readout("block5:cls", 4)
    with pytest.raises(ValueError, match="pooling must be one of"):
        embeddings.parse_readout("max_patch", 4)
    with pytest.raises(ValueError, match="block<k>"):
        embeddings.parse_readout("layer2:cls", 4)


def test_diagnosis_driver_prints_its_tables_on_the_quick_setting(tmp_path, capsys):
    """benchmarks/replay_diagnosis.py end to end at the replay's toy size (numbers mean nothing)."""
    import json
    import sys

    from test_soundfont import write_sf2

    from configs import replay_soundfont

    sys.path.insert(0, "benchmarks")
    import replay_diagnosis

    presets = [(f"P{p}", 0, p, 0) for p in replay_soundfont.QUICK_PROGRAMS]
    sf2 = write_sf2(tmp_path / "quick.sf2", presets)
    workdir = str(tmp_path / "diag")
    args = ["--workdir", workdir, "--quick", "--every", "1", "--episodes", "5",
            "--held_out_per_class", "4", "--soundfont", str(sf2),
            "--pretrain", "optim.base_lr=1e-2"]  # fmt: skip
    assert replay_diagnosis.main(args) == 0
    with pytest.raises(ValueError, match="not a field of config.pretrain"):
        replay_diagnosis.main(["--workdir", workdir, "--quick", "--pretrain", "optim.blr=1"])
    printed = capsys.readouterr().out
    for header in ("| step | training loss", "| what the pretraining sees", "| encoder | readout"):
        assert header in printed
    with open(f"{workdir}/diagnosis.json") as file:
        report = json.load(file)
    curve = report["reconstruction"]["held_out"]
    assert len(curve) >= 2 and all(0 < v < 10 for v in curve.values())
    # Every block of both encoders, each pooling, plus log-mel.
    assert len(report["per_block"]) == 2 * 4 * (2 + 1) + 1
