"""Configuration of the AudioMAE ViT encoder, and the published size presets."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from uamix_jax.models.kernels import ATTENTION_IMPLEMENTATIONS, KERNELS, resolve_kernels

# Widths/depths/heads of the ViT sizes AudioMAE's models_vit.py defines (small, base, large);
# 'tiny' is the usual ViT-Ti/16 (192 wide, 3 heads), used by fast tests and demos.
_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
}
_FINAL_NORMS = ("norm", "fc_norm")
_DTYPES = ("float32", "bfloat16")
# How to run the network, not what it is: left out of `to_dict`, hence of checkpoints.
EXECUTION_FIELDS = ("kernels", "attention_implementation")
# Written by versions that chose the attention kernel with this field; read and ignored.
_IGNORED_STORED_FIELDS = ("attention",)


@dataclasses.dataclass(frozen=True)
class AudioMAEConfig:
    """Shape and regularisation of an AudioMAE ViT encoder.

    `final_norm='norm'` is the pretrained (MAE) encoder: LayerNorm on all tokens.
    `final_norm='fc_norm'` is AudioMAE's fine-tuned classifier: LayerNorm on the pooled
    patch tokens only. `num_classes=0` means no classification head.
    `kernels`: 'stock' (plain Flax/JAX layers), 'cpu' (`models.cpu_kernels`) or 'auto',
    which construction resolves once to 'cpu' on the CPU backend and 'stock' elsewhere
    (`kernels.resolve_kernels`), so a config always holds the set its model runs.
    `attention_implementation`: jax.nn.dot_product_attention's 'xla' or 'cudnn' (cuDNN's
    fused attention: GPU, dtype='bfloat16'); read by the stock kernels only.
    """

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    patch_size: int = 16
    num_mel_bins: int = 128
    target_length: int = 1024
    final_norm: str = "norm"
    num_classes: int = 0
    drop_path_rate: float = 0.0
    dropout_rate: float = 0.0
    dtype: str = "float32"
    remat: bool = False
    kernels: str = "auto"
    attention_implementation: str = "xla"

    def __post_init__(self) -> None:
        problems = []
        if self.embed_dim % self.num_heads:
            problems.append(
                f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}"
            )
        for field in ("num_mel_bins", "target_length"):
            if getattr(self, field) % self.patch_size:
                problems.append(
                    f"{field}={getattr(self, field)} is not a multiple of "
                    f"patch_size={self.patch_size}"
                )
        if self.final_norm not in _FINAL_NORMS:
            problems.append(f"final_norm={self.final_norm!r}, expected one of {_FINAL_NORMS}")
        if self.dtype not in _DTYPES:
            problems.append(f"dtype={self.dtype!r}, expected one of {_DTYPES}")
        if self.kernels not in KERNELS:
            problems.append(f"kernels={self.kernels!r}, expected one of {KERNELS}")
        if self.attention_implementation not in ATTENTION_IMPLEMENTATIONS:
            problems.append(
                f"attention_implementation={self.attention_implementation!r}, expected one "
                f"of {ATTENTION_IMPLEMENTATIONS}"
            )
        elif self.attention_implementation == "cudnn" and self.dtype != "bfloat16":
            problems.append("attention_implementation='cudnn' needs dtype='bfloat16'")
        if problems:
            raise ValueError("Invalid AudioMAEConfig: " + "; ".join(problems))
        object.__setattr__(self, "kernels", resolve_kernels(self.kernels))

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (time patches, frequency patches) of a `target_length` x `num_mel_bins` input."""
        return self.target_length // self.patch_size, self.num_mel_bins // self.patch_size

    @property
    def num_patches(self) -> int:
        time_patches, freq_patches = self.grid
        return time_patches * freq_patches

    def replace(self, **changes: Any) -> "AudioMAEConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The network's description, as checkpoints store it: every field but EXECUTION_FIELDS."""
        values = dataclasses.asdict(self)
        return {name: value for name, value in values.items() if name not in EXECUTION_FIELDS}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "AudioMAEConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k not in _IGNORED_STORED_FIELDS}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"Unknown AudioMAEConfig fields {unknown}; known fields: {sorted(known)}"
            )
        return cls(**values)


def preset(name: str, **overrides: Any) -> AudioMAEConfig:
    """The named size ('tiny', 'small', 'base', 'large'), with any field overridden."""
    if name not in _PRESETS:
        raise ValueError(f"Unknown AudioMAE preset {name!r}; choose from {sorted(_PRESETS)}")
    return AudioMAEConfig(**{**_PRESETS[name], **overrides})


def heads_for_width(embed_dim: int) -> int:
    """Number of heads of the preset with this width; otherwise 64-wide heads (the ViT convention).

    Checkpoints do not record the head count (the fused qkv weight has the same shape for any
    split), so converters need this rule.
    """
    for values in _PRESETS.values():
        if values["embed_dim"] == embed_dim:
            return values["num_heads"]
    return max(1, embed_dim // 64)
