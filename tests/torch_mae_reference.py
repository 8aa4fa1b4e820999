"""An independent PyTorch re-statement of AudioMAE's MaskedAutoencoderViT (models_mae.py).

Written from facebookresearch/AudioMAE's models_mae.py, util/pos_embed.py and timm_patch's
Swin block, for parity tests with random weights: the same flat state-dict keys, the
masking from a given noise (AudioMAE draws it with torch.rand inside the forward), the
global (decoder_mode 0) and local (decoder_mode 1) decoders, patchify, norm_pix_loss and the
loss over the removed patches. Also AudioMAE's optimiser recipe (main_pretrain.py: timm's
add_weight_decay groups, AdamW; util/lr_sched.py: per-iteration warmup + half-cycle cosine).
It shares no code with uamix_jax.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch_audiomae_reference import AudioMAEReference, _Block, _Mlp, audiomae_sincos_table

PATCH = 16


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
    """AudioMAE's MaskedAutoencoderViT with the global (decoder_mode 0) or local
    (decoder_mode 1) decoder. AudioMAE fixes the local decoder at 16 blocks of 16 heads on a
    64 x 8 grid; here depth, heads and grid are arguments, as in the Flax model."""

    def __init__(
        self,
        decoder_embed_dim,
        decoder_depth,
        decoder_num_heads,
        decoder_mode,
        num_mel_bins=128,
        **encoder_kwargs,
    ):
        super().__init__(final_norm="norm", num_mel_bins=num_mel_bins, **encoder_kwargs)
        self.grid = (encoder_kwargs["target_length"] // PATCH, num_mel_bins // PATCH)
        embed_dim, mlp_ratio = encoder_kwargs["embed_dim"], encoder_kwargs.get("mlp_ratio", 4.0)
        self.local = decoder_mode == "local"
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        # Fixed (requires_grad False, pos_trainable's default), built on the swapped grid.
        self.decoder_pos_embed = nn.Parameter(
            torch.from_numpy(audiomae_sincos_table(decoder_embed_dim, *self.grid)),
            requires_grad=False,
        )
        if self.local:
            self.decoder_blocks = nn.ModuleList(
                _LocalBlock(
                    decoder_embed_dim,
                    decoder_num_heads,
                    self.grid,
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

    @staticmethod
    def random_masking(noise: torch.Tensor, mask_ratio: float):
        """(ids_keep, mask, ids_restore) from noise (B, L): the smallest noise is kept."""
        length = noise.shape[1]
        len_keep = int(length * (1 - mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        mask = torch.ones_like(noise)
        mask[:, :len_keep] = 0
        return ids_shuffle[:, :len_keep], torch.gather(mask, 1, ids_restore), ids_restore

    def random_masking_2d(self, noise_t, noise_f, mask_t_prob: float, mask_f_prob: float):
        """AudioMAE's mask_2d: whole time rows and frequency columns removed, from noise
        (B, T) and (B, F); visible tokens in raster order, then the removed ones."""
        (t, f), batch = self.grid, noise_t.shape[0]
        len_keep_t, len_keep_f = int(t * (1 - mask_t_prob)), int(f * (1 - mask_f_prob))

        def axis_mask(noise, len_keep, size):
            restore = torch.argsort(torch.argsort(noise, dim=1), dim=1)
            m = torch.ones(batch, size)
            m[:, :len_keep] = 0
            return torch.gather(m, 1, restore)

        mask_t = axis_mask(noise_t, len_keep_t, t)[:, :, None].expand(batch, t, f)
        mask_f = axis_mask(noise_f, len_keep_f, f)[:, None, :].expand(batch, t, f)
        mask = (1 - (1 - mask_t) * (1 - mask_f)).reshape(batch, t * f)
        # AudioMAE adds 999 to removed tokens' raster index; any offset >= T*F sorts the same.
        order = torch.argsort(torch.arange(t * f)[None].float() + (t * f) * mask, dim=1)
        return order[:, : len_keep_t * len_keep_f], mask, torch.argsort(order, dim=1)

    def forward(self, fbank, ids_keep, ids_restore):
        """Predicted patches (B, L, p*p): forward_encoder on the given visible tokens, then
        forward_decoder."""
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

    @staticmethod
    def patchify(fbank: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, T/p * F/p, p*p): 'nchpwq -> nhwpqc' with h = time, w = freq."""
        b, t, f = fbank.shape
        x = fbank.reshape(b, 1, t // PATCH, PATCH, f // PATCH, PATCH)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(b, (t // PATCH) * (f // PATCH), PATCH * PATCH)

    def forward_loss(self, fbank, pred, mask, norm_pix_loss: bool = True):
        """Mean over removed patches (mask 1) of each patch's mean squared error."""
        target = self.patchify(fbank)
        if norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)  # unbiased, torch's default
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = ((pred - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()


def reference_for(config) -> MAEReference:
    """The reference shaped as a uamix_jax MAEConfig (read by attribute: no import)."""
    enc = config.encoder
    return MAEReference(
        config.decoder_embed_dim,
        config.decoder_depth,
        config.decoder_num_heads,
        config.decoder_mode,
        num_mel_bins=enc.num_mel_bins,
        embed_dim=enc.embed_dim,
        depth=enc.depth,
        num_heads=enc.num_heads,
        mlp_ratio=enc.mlp_ratio,
        target_length=enc.target_length,
    )


def add_weight_decay(model: nn.Module, weight_decay: float, skip_list=()) -> list[dict]:
    """timm 0.3.2's optim_factory.add_weight_decay, re-stated: frozen tensors are left out,
    1-D tensors, '.bias' and skip_list names get no decay; AudioMAE passes no skip_list."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim == 1 or name.endswith(".bias") or name in skip_list:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def adjust_learning_rate(epoch: float, lr: float, min_lr: float, warmup_epochs: float, epochs: int):
    """util/lr_sched.py: linear warmup from 0, then half-cycle cosine to min_lr; epoch is
    fractional (data_iter_step / len(data_loader) + epoch), set before every step."""
    if epoch < warmup_epochs:
        return lr * epoch / warmup_epochs
    progress = (epoch - warmup_epochs) / (epochs - warmup_epochs)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
