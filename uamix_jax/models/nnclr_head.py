"""The NNCLR contrastive head: projector g and predictor q on top of the pooled encoder feature.

Layer layout of the NNCLR paper as used by MAE-CT. The head takes one view (B, D) or the
views stacked (V, B, D). BatchNorm normalises each view over its batch axis with that view's
own statistics, exactly as one call per view would; under ``jax.jit`` with a globally sharded
batch that is the global batch, so no cross-device reduction is written here. Stacking the
views makes each linear layer one matmul over all V * B rows, with one weight gradient,
instead of V small ones whose gradients are then summed. Apply with
``mutable=['batch_stats']`` when ``train=True``. `kernels` selects the linear layers as for
the encoder (`uamix_jax.models.kernels`; 'auto' is resolved there).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from uamix_jax.models import kernels as K

# PyTorch BatchNorm1d defaults, which MAE-CT's head uses: running = 0.9 running + 0.1 batch
# (BN_MOMENTUM is, as in flax, the weight of the old value), eps 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


class ViewBatchNorm(nn.Module):
    """BatchNorm over axis -2 of (..., B, F), each leading index (view) on its own statistics.

    nn.BatchNorm's parameters ('scale', 'bias'), batch statistics ('mean', 'var') and
    numerics (float32 statistics, E[x^2] - E[x]^2 clipped at 0); in training the running
    averages take the views' statistics one after another, as one nn.BatchNorm call per
    view would.
    """

    use_running_average: bool
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        scale = self.param("scale", nn.initializers.ones_init(), (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (features,), jnp.float32)
        if self.use_running_average:
            mean, var = running_mean.value, running_var.value
        else:
            x32 = x.astype(jnp.float32)
            mean = jnp.mean(x32, axis=-2, keepdims=True)
            var = jnp.maximum(jnp.mean(x32 * x32, axis=-2, keepdims=True) - mean * mean, 0.0)
            if not self.is_initializing():
                new_mean, new_var = running_mean.value, running_var.value
                for view_mean, view_var in zip(
                    mean.reshape(-1, features), var.reshape(-1, features)
                ):
                    new_mean = BN_MOMENTUM * new_mean + (1 - BN_MOMENTUM) * view_mean
                    new_var = BN_MOMENTUM * new_var + (1 - BN_MOMENTUM) * view_var
                running_mean.value, running_var.value = new_mean, new_var
        y = (x - mean) * (jax.lax.rsqrt(var + BN_EPSILON) * scale) + bias
        return y.astype(self.dtype or jnp.result_type(x, jnp.float32))


def _batch_norm(name: str, train: bool, dtype: jnp.dtype) -> ViewBatchNorm:
    return ViewBatchNorm(use_running_average=not train, dtype=dtype, name=name)


def _linear(
    kernels: str, features: int, name: str, dtype: jnp.dtype, use_bias: bool = False
) -> nn.Module:
    # nn.Dense's default initialisation (LeCun normal), not the ViT's Xavier.
    return K.dense(
        kernels,
        features,
        dtype=dtype,
        use_bias=use_bias,
        kernel_init=nn.initializers.lecun_normal(),
        name=name,
    )


class Projector(nn.Module):
    """g: Linear(D->h, no bias) BN ReLU Linear(h->h, no bias) BN ReLU Linear(h->d, no bias) BN.

    The last Linear has no bias because the BatchNorm right after it removes any bias
    (as in MAE-CT's projector).
    """

    hidden_dim: int = 2048
    output_dim: int = 256
    dtype: jnp.dtype = jnp.float32
    kernels: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        """([V,] B, D) pooled features -> ([V,] B, output_dim) projections z (not normalised)."""
        x = _linear(self.kernels, self.hidden_dim, "fc1", self.dtype)(x)
        x = nn.relu(_batch_norm("bn1", train, self.dtype)(x))
        x = _linear(self.kernels, self.hidden_dim, "fc2", self.dtype)(x)
        x = nn.relu(_batch_norm("bn2", train, self.dtype)(x))
        x = _linear(self.kernels, self.output_dim, "fc3", self.dtype)(x)
        return _batch_norm("bn3", train, self.dtype)(x)


class Predictor(nn.Module):
    """q: Linear(d->h, no bias) BN ReLU Linear(h->d).

    ``output_bias=True`` follows the NNCLR paper; MAE-CT drops this bias.
    """

    hidden_dim: int = 4096
    output_dim: int = 256
    output_bias: bool = True
    dtype: jnp.dtype = jnp.float32
    kernels: str = "auto"

    @nn.compact
    def __call__(self, z: jax.Array, train: bool) -> jax.Array:
        """([V,] B, d) projections -> ([V,] B, output_dim) predictions p (not normalised)."""
        x = _linear(self.kernels, self.hidden_dim, "fc1", self.dtype)(z)
        x = nn.relu(_batch_norm("bn1", train, self.dtype)(x))
        return _linear(self.kernels, self.output_dim, "fc2", self.dtype, self.output_bias)(x)


class NNCLRHead(nn.Module):
    """Projector followed by predictor; parameters under ``projector/`` and ``predictor/``.

    An EMA target projector is a separate ``Projector`` applied to an EMA copy of
    ``params['projector']`` (see ``uamix_jax.training.nnclr.ema_update``).
    """

    proj_hidden_dim: int = 2048
    output_dim: int = 256
    pred_hidden_dim: int = 4096
    pred_output_bias: bool = True
    dtype: jnp.dtype = jnp.float32
    kernels: str = "auto"

    def setup(self) -> None:
        self.projector = Projector(self.proj_hidden_dim, self.output_dim, self.dtype, self.kernels)
        self.predictor = Predictor(
            self.pred_hidden_dim, self.output_dim, self.pred_output_bias, self.dtype, self.kernels
        )

    def __call__(self, pooled: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
        """([V,] B, D) pooled features -> ``(z, p)``, both ([V,] B, output_dim) float32."""
        z = self.projector(pooled, train)
        p = self.predictor(z, train)
        return z.astype(jnp.float32), p.astype(jnp.float32)
