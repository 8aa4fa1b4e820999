"""The stock kernels (what GPUs and TPUs run) against the XLA:CPU kernels, on the CPU.

Both sets must give the same parameter trees, outputs and gradients: each layer alone, then
a tiny AudioMAE encoder, the MAE decoder and the NNCLR head. Tolerance, per array: the max
abs difference over the array is at most TOL * max(1, max abs value), TOL = 1e-5 for one
float32 layer and 2e-5 through a model (measured on the tiny encoder: 3e-6 on outputs up to
7, 6e-5 on parameter gradients up to 115); bfloat16 within 2% of the largest value.
"""

import ast
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import uamix_jax
from uamix_jax.models import audiomae, kernels, mae, masking, nnclr_head

KERNEL_SETS = ("stock", "cpu")
LAYER_TOL = 1e-5  # float32, one layer
MODEL_TOL = 2e-5  # float32, through a few blocks
BF16_TOL = 2e-2  # bfloat16


def _normal(shape, seed=0, scale=1.0):
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _assert_trees_close(a, b, tol):
    """Same structure, shapes and dtypes; per array max |a - b| <= tol * max(1, max |b|)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        name = jax.tree_util.keystr(path)
        assert x.shape == y.shape and x.dtype == y.dtype, name
        x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
        error, scale = np.abs(x - y).max(initial=0.0), max(1.0, np.abs(y).max(initial=0.0))
        assert error <= tol * scale, f"{name}: max abs difference {error}, max abs value {scale}"


def _values_and_grads(apply, variables, *inputs):
    """f(variables, *inputs) and the gradients of a fixed random projection of it."""

    def loss(variables, *inputs):
        out = apply(variables, *inputs)
        weights = jax.tree.map(lambda x: _normal(x.shape, seed=7), out)
        terms = jax.tree.map(lambda x, w: jnp.sum(x.astype(jnp.float32) * w), out, weights)
        return sum(jax.tree.leaves(terms)), out

    argnums = tuple(range(1 + len(inputs)))
    grads, out = jax.jit(jax.grad(loss, argnums=argnums, has_aux=True))(variables, *inputs)
    return out, grads


def test_resolver():
    assert kernels.resolve_kernels("auto") == "cpu"  # conftest: the CPU backend
    assert [kernels.resolve_kernels(k) for k in ("stock", "cpu")] == ["stock", "cpu"]
    with pytest.raises(ValueError, match="kernels='gpu'"):
        kernels.resolve_kernels("gpu")


def test_only_the_resolver_asks_for_the_backend():
    package = pathlib.Path(uamix_jax.__file__).parent
    callers = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "default_backend":
                callers.append(str(path.relative_to(package)))
    assert callers == ["models/kernels.py"]


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("features", [4, 9])
def test_dense(features, use_bias):
    x = _normal((2, 5, 6))

    def layer(k):
        return kernels.dense(k, features, use_bias=use_bias, name="fc")

    variables = [layer(k).init(jax.random.key(0), x) for k in KERNEL_SETS]
    _assert_trees_close(*variables, 0.0)  # same names, shapes and initial values
    params = jax.tree.map(lambda p: p + _normal(p.shape, seed=1), variables[0])
    stock, cpu = (_values_and_grads(layer(k).apply, params, x) for k in KERNEL_SETS)
    _assert_trees_close(stock, cpu, LAYER_TOL)


def test_dense_bfloat16():
    x = _normal((2, 5, 6)).astype(jnp.bfloat16)
    variables = {"params": {"kernel": _normal((6, 9), 1), "bias": _normal((9,), 2)}}
    results = [
        _values_and_grads(kernels.dense(k, 9, dtype=jnp.bfloat16, name="fc").apply, variables, x)
        for k in KERNEL_SETS
    ]
    _assert_trees_close(*results, BF16_TOL)


@pytest.mark.parametrize("dtype", [None, jnp.bfloat16])
def test_layer_norm(dtype):
    x = _normal((3, 7, 16), scale=2.0) + 3.0  # rows away from zero mean
    variables = {"params": {"scale": 1.0 + _normal((16,), 1, 0.5), "bias": _normal((16,), 2)}}
    inits = [
        kernels.layer_norm(k, name="norm").init(jax.random.key(0), x) for k in KERNEL_SETS
    ]
    _assert_trees_close(*inits, 0.0)
    if dtype is None:
        results = [
            _values_and_grads(kernels.layer_norm(k, name="norm").apply, variables, x)
            for k in KERNEL_SETS
        ]
        _assert_trees_close(*results, LAYER_TOL)
    else:
        low = x.astype(dtype)
        results = [
            _values_and_grads(kernels.layer_norm(k, dtype=dtype, name="n").apply, variables, low)
            for k in KERNEL_SETS
        ]
        _assert_trees_close(*results, BF16_TOL)


def test_gelu():
    x = jnp.linspace(-9.0, 9.0, 2001, dtype=jnp.float32)
    stock, cpu = (
        _values_and_grads(lambda _, x, k=k: kernels.gelu(k, x), {}, x) for k in KERNEL_SETS
    )
    _assert_trees_close(stock, cpu, LAYER_TOL)


@pytest.mark.parametrize("shape", [(2, 17, 3, 8), (1, 33, 2, 16), (4, 9, 1, 4)])
def test_attention(shape):
    """(B, N, H, Dh); the CPU kernel's chunking cuts the batch across the 2 test devices."""
    batch, length, heads, head_dim = shape
    qkv = _normal((batch, length, 3, heads, head_dim))
    stock, cpu = (
        _values_and_grads(lambda _, qkv, k=k: kernels.qkv_attention(k, qkv), {}, qkv)
        for k in KERNEL_SETS
    )
    _assert_trees_close(stock, cpu, LAYER_TOL)


def test_attention_bfloat16():
    qkv = _normal((2, 17, 3, 2, 8)).astype(jnp.bfloat16)
    results = [
        _values_and_grads(lambda _, qkv, k=k: kernels.qkv_attention(k, qkv), {}, qkv)
        for k in KERNEL_SETS
    ]
    _assert_trees_close(*results, BF16_TOL)


def _tiny_encoder_config(**overrides):
    return audiomae.preset(
        "tiny",
        **{
            "embed_dim": 64,
            "depth": 3,
            "num_heads": 2,
            "target_length": 128,
            "final_norm": "fc_norm",
            "num_classes": 5,
            **overrides,
        },
    )


def _perturbed(variables, seed=1):
    """Every parameter (norms included) moved off its initial value, so no term is trivial."""
    params = jax.tree.map(lambda p: p + _normal(p.shape, seed, 0.05), variables["params"])
    return {**variables, "params": params}


@pytest.mark.parametrize("final_norm,num_classes", [("norm", 0), ("fc_norm", 5)])
def test_tiny_audiomae(final_norm, num_classes):
    """Tokens, pooled output, logits and every parameter gradient of a tiny encoder."""
    config = _tiny_encoder_config(final_norm=final_norm, num_classes=num_classes)
    fbank = _normal((3, 128, 128))
    models = {k: audiomae.AudioMAEEncoder(config.replace(kernels=k)) for k in KERNEL_SETS}
    inits = [jax.jit(model.init)(jax.random.key(0), fbank[:1]) for model in models.values()]
    _assert_trees_close(*inits, 0.0)  # one parameter tree, one initialisation
    variables = _perturbed(inits[0])

    def apply(k):
        def encode(variables, fbank):
            out = models[k].apply(variables, fbank)
            return {"tokens": out.tokens, "pooled": out.pooled, "logits": out.logits}

        return encode

    stock, cpu = (_values_and_grads(apply(k), variables, fbank) for k in KERNEL_SETS)
    _assert_trees_close(stock[0], cpu[0], MODEL_TOL)  # outputs
    _assert_trees_close(stock[1][0]["params"], cpu[1][0]["params"], MODEL_TOL)  # d params
    _assert_trees_close(stock[1][1], cpu[1][1], MODEL_TOL)  # d fbank


def test_tiny_audiomae_bfloat16():
    config = _tiny_encoder_config(dtype="bfloat16")
    fbank = _normal((2, 128, 128))
    init = jax.jit(audiomae.AudioMAEEncoder(config).init)
    variables = _perturbed(init(jax.random.key(0), fbank[:1]))
    pooled = [
        jax.jit(audiomae.AudioMAEEncoder(config.replace(kernels=k)).apply)(variables, fbank).pooled
        for k in KERNEL_SETS
    ]
    _assert_trees_close(*pooled, BF16_TOL)


@pytest.mark.parametrize("decoder_mode", mae.DECODER_MODES)
def test_tiny_mae(decoder_mode):
    encoder = _tiny_encoder_config(depth=1, final_norm="norm", num_classes=0)
    fbank = _normal((2, 128, 128))
    m = masking.random_masking(jax.random.key(3), 2, encoder.num_patches, 0.75)
    models = {
        k: mae.MaskedAutoencoder(
            mae.MAEConfig(
                encoder.replace(kernels=k),
                decoder_embed_dim=32,
                decoder_depth=2,
                decoder_num_heads=2,
                decoder_mode=decoder_mode,
            )
        )
        for k in KERNEL_SETS
    }
    inits = [
        jax.jit(model.init)(jax.random.key(0), fbank, m.ids_keep, m.ids_restore)
        for model in models.values()
    ]
    _assert_trees_close(*inits, 0.0)
    variables = _perturbed(inits[0])
    stock, cpu = (
        _values_and_grads(
            lambda v, fbank, k=k: models[k].apply(v, fbank, m.ids_keep, m.ids_restore),
            variables,
            fbank,
        )
        for k in KERNEL_SETS
    )
    _assert_trees_close(stock[0], cpu[0], MODEL_TOL)
    _assert_trees_close(stock[1][0]["params"], cpu[1][0]["params"], MODEL_TOL)


def test_nnclr_head():
    pooled = _normal((2, 6, 12))  # two stacked views of 6 clips
    heads = {k: nnclr_head.NNCLRHead(16, 8, 24, kernels=k) for k in KERNEL_SETS}
    inits = [
        jax.jit(head.init, static_argnames="train")(jax.random.key(0), pooled, train=False)
        for head in heads.values()
    ]
    _assert_trees_close(*inits, 0.0)
    variables = _perturbed(inits[0])

    def apply(k):
        def project(variables, pooled):
            (z, p), _ = heads[k].apply(variables, pooled, train=True, mutable=["batch_stats"])
            return z, p

        return project

    stock, cpu = (_values_and_grads(apply(k), variables, pooled) for k in KERNEL_SETS)
    _assert_trees_close(stock, cpu, MODEL_TOL)


def test_same_parameter_names_as_pytorch_either_way():
    """The converter's layout fits both sets: their trees are key for key the same."""
    config = _tiny_encoder_config()
    shapes = [
        jax.eval_shape(
            audiomae.AudioMAEEncoder(config.replace(kernels=k)).init,
            jax.random.key(0),
            jnp.zeros((1, 128, 128)),
        )
        for k in KERNEL_SETS
    ]
    assert shapes[0] == shapes[1]
    assert set(shapes[0]["params"]["blocks_0"]["attn"]) == {"qkv", "proj"}
    assert set(shapes[0]["params"]["blocks_0"]["norm1"]) == {"scale", "bias"}


def test_stock_layers_are_the_flax_classes():
    assert type(kernels.dense("stock", 4, name="fc")) is nn.Dense
    assert type(kernels.layer_norm("stock", name="norm")) is nn.LayerNorm
    assert type(kernels.dense("cpu", 4, name="fc")).__name__ == "CpuDense"
    assert type(kernels.layer_norm("cpu", name="norm")).__name__ == "CpuLayerNorm"
