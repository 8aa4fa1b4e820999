"""PyTorch <-> Flax conversion of AudioMAE checkpoints: every file form, parity, round trip, errors."""

import argparse
import os
import sys

import jax
import numpy as np
import pytest
import safetensors.numpy
import torch
from torch_audiomae_reference import AudioMAEReference, fake_decoder_state

from uamix_jax.models import audiomae
from weights_conversion import convert_audiomae
from weights_conversion.torch_files import CheckpointReadError, read_state_dict

TOLERANCE = 1e-4  # float32, max abs difference (issue 2)
# 128 wide with 2 heads: the converter's default head count (64-wide heads) applies.
TINY = dict(embed_dim=128, depth=2, num_heads=2, target_length=128)


def _reference(seed=0, **kwargs):
    torch.manual_seed(seed)
    return AudioMAEReference(**kwargs).randomize_norms(seed).eval()


def _training_dict(reference):
    """The shape of AudioMAE's saved pretraining checkpoint, decoder and bookkeeping included."""
    num_patches = reference.pos_embed.shape[1] - 1
    model = {
        **reference.state_dict(),
        **fake_decoder_state(reference.cls_token.shape[-1], num_patches),
    }
    args = argparse.Namespace(
        model="mae_vit_base_patch16", blr=2e-4, mask_ratio=0.8, norm_pix_loss=True
    )
    return {
        "model": model,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
        "epoch": 32,
        "scaler": {"scale": 65536.0},
        "args": args,
    }


def _write(form, reference, path):
    state = reference.state_dict()
    if form == "training_dict":
        torch.save(_training_dict(reference), path)
    elif form == "bare":
        torch.save(state, path)
    elif form == "module_prefixed":
        torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, path)
    elif form == "safetensors":
        safetensors.numpy.save_file({k: v.numpy() for k, v in state.items()}, path)
    return path


def _assert_outputs_match(reference, model, variables, fbank):
    """The converted model with each kernel set against the PyTorch model: max abs errors."""
    with torch.no_grad():
        expected = reference(torch.from_numpy(fbank))
    errors = {}
    for kernels in ("stock", "cpu"):
        encoder = audiomae.AudioMAEEncoder(model.config.replace(kernels=kernels))
        out = jax.jit(encoder.apply)(variables, fbank)
        for name in ("tokens", "pooled", "logits"):
            if expected[name] is None:
                assert getattr(out, name) is None
                continue
            got = np.asarray(getattr(out, name))
            errors[f"{kernels} {name}"] = float(np.abs(got - expected[name].numpy()).max())
    assert max(errors.values()) <= TOLERANCE, errors
    return errors


def _convert(input_path, output_dir, *extra):
    assert (
        convert_audiomae.main(["--input", str(input_path), "--output", str(output_dir), *extra])
        == 0
    )


@pytest.mark.parametrize(
    "form,suffix",
    [
        ("training_dict", ".pth"),
        ("bare", ".pth"),
        ("module_prefixed", ".pth"),
        ("safetensors", ".safetensors"),
    ],
)
def test_every_checkpoint_form_converts_to_matching_outputs(tmp_path, capsys, form, suffix):
    reference = _reference(final_norm="fc_norm", num_classes=5, **TINY)
    source = _write(form, reference, tmp_path / f"ckpt{suffix}")
    _convert(source, tmp_path / "flax")
    dropped = len(fake_decoder_state(128, 64)) if form == "training_dict" else 0
    assert f"Dropped {dropped} MAE decoder tensors" in capsys.readouterr().out
    model, variables = audiomae.load(tmp_path / "flax")
    assert (model.config.final_norm, model.config.num_classes, model.config.num_heads) == (
        "fc_norm",
        5,
        2,
    )
    _assert_outputs_match(
        reference, model, variables, np.random.RandomState(1).randn(2, 128, 128).astype(np.float32)
    )


def test_base_size_full_input_parity(tmp_path):
    reference = _reference()  # ViT-B/16 pretrained encoder ('norm'), 1024 x 128 input
    source = tmp_path / "pretrained.pth"
    torch.save(_training_dict(reference), source)
    _convert(source, tmp_path / "flax")
    model, variables = audiomae.load(tmp_path / "flax")
    assert (
        model.config.embed_dim,
        model.config.depth,
        model.config.num_heads,
        model.config.target_length,
    ) == (768, 12, 12, 1024)
    fbank = np.random.RandomState(0).randn(1, 1024, 128).astype(np.float32)
    print("base max abs errors:", _assert_outputs_match(reference, model, variables, fbank))


@pytest.mark.parametrize("final_norm,num_classes", [("norm", 0), ("fc_norm", 5)])
def test_pytorch_flax_pytorch_round_trip_is_bit_exact(tmp_path, final_norm, num_classes):
    reference = _reference(final_norm=final_norm, num_classes=num_classes, **TINY)
    _convert(_write("training_dict", reference, tmp_path / "ckpt.pth"), tmp_path / "flax")
    _convert(tmp_path / "flax", tmp_path / "back.pth", "--to-torch")
    back = torch.load(tmp_path / "back.pth", weights_only=True)["model"]
    original = reference.state_dict()
    assert list(back) == list(original)
    for key, tensor in original.items():
        assert back[key].dtype == tensor.dtype and torch.equal(back[key], tensor), key


def test_tuned_flax_checkpoint_goes_back_to_pytorch(tmp_path):
    """A checkpoint written by audiomae.save (as the tuning job does) loads into PyTorch strictly."""
    config = audiomae.preset("tiny", final_norm="fc_norm", num_classes=3, **TINY)
    model = audiomae.AudioMAEEncoder(config)
    fbank = np.random.RandomState(2).randn(2, 128, 128).astype(np.float32)
    variables = model.init(jax.random.PRNGKey(7), fbank)
    audiomae.save(tmp_path / "tuned", config, variables)
    _convert(tmp_path / "tuned", tmp_path / "tuned.pth", "--to-torch")
    reference = AudioMAEReference(final_norm="fc_norm", num_classes=3, **TINY)
    reference.load_state_dict(
        torch.load(tmp_path / "tuned.pth", weights_only=True)["model"], strict=True
    )
    _assert_outputs_match(reference.eval(), model, variables, fbank)


def test_shorter_target_length_matches_audiomae_recipe(tmp_path):
    """ESC-50-style 512-frame model: pos_embed cropped as AudioMAE's fine-tuning does."""
    reference = _reference(embed_dim=64, depth=1, num_heads=1, target_length=1024)
    _convert(_write("bare", reference, tmp_path / "full.pth"), tmp_path / "flax")
    model, variables = audiomae.load(tmp_path / "flax", target_length=512)
    short = _reference(embed_dim=64, depth=1, num_heads=1, target_length=512)
    short_state = {**reference.state_dict()}
    # AudioMAE's interpolate_pos_embed_audio: view patch rows as (8, 64), keep 32 time columns.
    patches = short_state["pos_embed"][:, 1:].reshape(1, 8, 64, 64)[:, :, :32].reshape(1, 256, 64)
    short_state["pos_embed"] = torch.cat([short_state["pos_embed"][:, :1], patches], dim=1)
    short.load_state_dict(short_state)
    _assert_outputs_match(
        short, model, variables, np.random.RandomState(3).randn(2, 512, 128).astype(np.float32)
    )


def test_mismatched_state_dict_lists_missing_unexpected_and_misshaped(tmp_path, capsys):
    state = _reference(**TINY).state_dict()
    del state["blocks.1.mlp.fc2.bias"]
    state["blocks.0.attn.relative_position_bias"] = torch.zeros(3)
    state["blocks.0.attn.proj.weight"] = torch.zeros(128, 64)
    torch.save(state, tmp_path / "bad.pth")
    assert (
        convert_audiomae.main(
            ["--input", str(tmp_path / "bad.pth"), "--output", str(tmp_path / "out")]
        )
        == 1
    )
    message = capsys.readouterr().err
    assert str(tmp_path / "bad.pth") in message
    assert "missing keys: ['blocks.1.mlp.fc2.bias']" in message
    assert "unexpected keys: ['blocks.0.attn.relative_position_bias']" in message
    assert "blocks.0.attn.proj.weight: (128, 64) != expected (128, 128)" in message
    assert not os.path.exists(tmp_path / "out")


def test_cls_token_classifier_is_refused(tmp_path):
    state = {
        **_reference(**TINY).state_dict(),
        "head.weight": torch.zeros(4, 128),
        "head.bias": torch.zeros(4),
    }
    torch.save(state, tmp_path / "cls.pth")
    with pytest.raises(ValueError, match="no fc_norm"):
        convert_audiomae.torch_to_flax(tmp_path / "cls.pth", tmp_path / "out")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_corrupt_and_truncated_files_name_the_file(tmp_path, suffix):
    valid = _write(
        "safetensors" if suffix == ".safetensors" else "bare",
        _reference(**TINY),
        tmp_path / f"valid{suffix}",
    )
    data = open(valid, "rb").read()
    for name, content in (("truncated", data[: len(data) // 2]), ("corrupt", os.urandom(4096))):
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(content)
        with pytest.raises(CheckpointReadError, match="corrupt, truncated") as error:
            read_state_dict(path)
        assert str(path) in str(error.value)
    with pytest.raises(CheckpointReadError, match="does not exist"):
        read_state_dict(tmp_path / f"missing{suffix}")


class _RunsCode:
    """A pickle payload that would create a file if unpickled with code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save(
        {"model": {"cls_token": torch.zeros(1, 1, 8), "payload": _RunsCode(marker)}},
        tmp_path / "evil.pth",
    )
    with pytest.raises(CheckpointReadError, match="Refused to load .*evil.pth"):
        read_state_dict(tmp_path / "evil.pth")
    assert not marker.exists()


def test_without_torch_pth_is_explained_and_safetensors_still_read(tmp_path, monkeypatch):
    reference = _reference(**TINY)
    pth = _write("bare", reference, tmp_path / "ckpt.pth")
    st = _write("safetensors", reference, tmp_path / "ckpt.safetensors")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(CheckpointReadError, match="needs PyTorch, which is not installed"):
        read_state_dict(pth)
    assert set(read_state_dict(st)) == set(reference.state_dict())


def test_half_precision_tensors_are_read_exactly_as_float32(tmp_path):
    import safetensors.torch

    tensors = {"bf16": torch.randn(4, 3).to(torch.bfloat16), "fp16": torch.randn(2).half()}
    safetensors.torch.save_file(tensors, tmp_path / "half.safetensors")
    torch.save(tensors, tmp_path / "half.pth")
    for name in ("half.safetensors", "half.pth"):
        arrays = read_state_dict(tmp_path / name)
        for key, tensor in tensors.items():
            assert arrays[key].dtype == np.float32
            np.testing.assert_array_equal(arrays[key], tensor.float().numpy())
