"""Masking and reconstruction-loss tests for AudioMAE pretraining."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from uamix_jax.models import masking
from uamix_jax.pretraining import objective


@pytest.mark.parametrize("num_patches,ratio,expected_keep", [(512, 0.8, 102), (32, 0.75, 8)])
def test_random_masking_keeps_exact_count(num_patches, ratio, expected_keep):
    m = masking.random_masking(jax.random.PRNGKey(0), 4, num_patches, ratio)
    assert m.ids_keep.shape == (4, expected_keep)
    np.testing.assert_array_equal(m.mask.sum(axis=1), num_patches - expected_keep)
    for row_keep, row_mask in zip(np.asarray(m.ids_keep), np.asarray(m.mask)):
        assert len(set(row_keep.tolist())) == expected_keep
        np.testing.assert_array_equal(row_mask[row_keep], 0.0)
    # Different clips of the batch get different maskings.
    assert not np.array_equal(np.sort(m.ids_keep[0]), np.sort(m.ids_keep[1]))


@pytest.mark.parametrize(
    "make_masking",
    [
        lambda rng: masking.random_masking(rng, 3, 64, 0.8),
        lambda rng: masking.random_masking_2d(rng, 3, (16, 4), 0.7, 0.3),
    ],
)
def test_unshuffle_restores_raster_order(make_masking):
    m = make_masking(jax.random.PRNGKey(1))
    batch, num_patches = m.mask.shape
    tokens = jnp.broadcast_to(
        jnp.arange(num_patches, dtype=jnp.float32)[None, :, None], (batch, num_patches, 2)
    )
    visible = masking.gather_tokens(tokens, m.ids_keep)
    fillers = jnp.full((batch, num_patches - m.ids_keep.shape[1], 2), -1.0)
    restored = masking.gather_tokens(jnp.concatenate([visible, fillers], axis=1), m.ids_restore)
    expected = np.where(np.asarray(m.mask)[..., None] == 1, -1.0, np.asarray(tokens))
    np.testing.assert_array_equal(restored, expected)


def test_2d_masking_hides_whole_rows_and_columns():
    grid = (16, 4)
    m = masking.random_masking_2d(jax.random.PRNGKey(2), 5, grid, 0.7, 0.3)
    keep_t, keep_f = int(16 * 0.3), int(4 * 0.7)
    assert m.ids_keep.shape == (5, keep_t * keep_f)
    for clip_mask, clip_keep in zip(np.asarray(m.mask).reshape(5, *grid), np.asarray(m.ids_keep)):
        visible = clip_mask == 0
        visible_rows, visible_cols = visible.any(axis=1), visible.any(axis=0)
        assert visible_rows.sum() == keep_t and visible_cols.sum() == keep_f
        # Visible exactly where a surviving row meets a surviving column.
        np.testing.assert_array_equal(visible, np.outer(visible_rows, visible_cols))
        np.testing.assert_array_equal(clip_keep, np.sort(clip_keep))  # raster order


def test_masking_rejects_ratios_that_hide_nothing_or_everything():
    with pytest.raises(ValueError, match="mask_ratio"):
        masking.random_masking(jax.random.PRNGKey(0), 1, 8, 0.99)
    with pytest.raises(ValueError, match="mask_t_prob"):
        masking.random_masking_2d(jax.random.PRNGKey(0), 1, (4, 4), 0.0, 0.0)


def _torch_patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """AudioMAE's patchify, re-stated: imgs (N, 1, T, F)."""
    n, _, t, f = imgs.shape
    x = imgs.reshape(n, 1, t // p, p, f // p, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(n, (t // p) * (f // p), p * p)


def _torch_forward_loss(imgs, pred, mask, p, norm_pix_loss):
    """AudioMAE's forward_loss, re-stated."""
    target = _torch_patchify(imgs, p)
    if norm_pix_loss:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred - target) ** 2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_loss_matches_pytorch_restatement(norm_pix_loss):
    rng = np.random.default_rng(0)
    fbank = rng.normal(size=(2, 64, 32)).astype(np.float32)
    pred = rng.normal(size=(2, 32, 64)).astype(np.float32)
    mask = (rng.uniform(size=(2, 32)) < 0.7).astype(np.float32)
    mask[:, 0] = 1
    target = objective.reconstruction_targets(jnp.asarray(fbank), 8, norm_pix_loss)
    ours = objective.masked_mse(jnp.asarray(pred), target, jnp.asarray(mask))
    ref = _torch_forward_loss(
        torch.from_numpy(fbank)[:, None],
        torch.from_numpy(pred),
        torch.from_numpy(mask),
        8,
        norm_pix_loss,
    )
    np.testing.assert_allclose(float(ours), float(ref), rtol=1e-5)


def test_patchify_roundtrip_and_layout():
    fbank = jnp.arange(2 * 32 * 16, dtype=jnp.float32).reshape(2, 32, 16)
    patches = objective.patchify(fbank, 8)
    reference = _torch_patchify(torch.from_numpy(np.array(fbank))[:, None], 8)
    np.testing.assert_array_equal(patches, reference)
    np.testing.assert_array_equal(objective.unpatchify(patches, 16, 8), fbank)


def test_loss_ignores_visible_patches():
    rng = np.random.default_rng(1)
    target = jnp.asarray(rng.normal(size=(2, 10, 4)), jnp.float32)
    pred = jnp.asarray(rng.normal(size=(2, 10, 4)), jnp.float32)
    mask = jnp.asarray(rng.uniform(size=(2, 10)) < 0.5, jnp.float32).at[:, 0].set(1).at[:, 1].set(0)
    perturbed = jnp.where(mask[..., None] == 0, pred + 100.0, pred)
    base = objective.masked_mse(pred, target, mask)
    np.testing.assert_allclose(objective.masked_mse(perturbed, target, mask), base, rtol=1e-6)
    # ...while a change on a hidden patch does move it.
    assert objective.masked_mse(pred.at[:, 0].add(1.0), target, mask) != base
