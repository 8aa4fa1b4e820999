"""Peak FLOP/s of this machine, the denominator of model FLOPs utilisation (MFU).

Two figures, both reported:
- measured: the best FLOP/s of a large square matmul (JAX/XLA and PyTorch, best of a few
  repetitions), i.e. what a dense GEMM actually reaches here. This is the peak the MFU of
  ``step_time.py`` is quoted against on a CPU.
- nominal: cores x clock x SIMD lanes x 2 (FMA) x FMA units per core, from ``lscpu``. The
  number of FMA units per core is not visible from lscpu; ``--fma_units`` defaults to 2
  (Intel Xeon Scalable Gold/Platinum and AMD Zen 5 server cores).
On an accelerator, pass ``--peak_tflops`` or rely on ``KNOWN_PEAK_TFLOPS`` (vendor dense
figures, no sparsity) keyed by ``jax.devices()[0].device_kind``.

Usage: ``python benchmarks/peak_flops.py [--size 4096] [--dtype float32]`` prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import time

from uamix_jax import xla_setup

# Vendor dense peak TFLOP/s (bfloat16 / float32 without TF32) per jax device_kind; from the
# NVIDIA A100/H100 and Google Cloud TPU data sheets.
KNOWN_PEAK_TFLOPS = {
    "NVIDIA A100-SXM4-40GB": {"bfloat16": 312.0, "float32": 19.5},
    "NVIDIA A100-SXM4-80GB": {"bfloat16": 312.0, "float32": 19.5},
    "NVIDIA H100 80GB HBM3": {"bfloat16": 989.0, "float32": 67.0},
    "NVIDIA H200": {"bfloat16": 989.0, "float32": 67.0},
    "TPU v4": {"bfloat16": 275.0, "float32": 275.0 / 4},
    "TPU v5 lite": {"bfloat16": 197.0, "float32": 197.0 / 4},
    "TPU v5p": {"bfloat16": 459.0, "float32": 459.0 / 4},
}


def lscpu() -> dict[str, str]:
    """``lscpu`` as a dict of its 'Key: value' lines."""
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    return {
        k.strip(): v.strip()
        for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)
    }


def cpu_clock_ghz(info: dict[str, str]) -> float:
    """Max clock from lscpu, else the current clock in /proc/cpuinfo (virtual machines)."""
    if "CPU max MHz" in info:
        return float(info["CPU max MHz"]) / 1e3
    with open("/proc/cpuinfo") as f:
        return float(re.search(r"cpu MHz\s*:\s*([\d.]+)", f.read()).group(1)) / 1e3


def nominal_peak_gflops(dtype: str = "float32", fma_units: int = 2) -> dict:
    """cores x clock x lanes x 2 x FMA units, with the pieces it was made of."""
    info = lscpu()
    flags = info.get("Flags", "").split()
    vector_bits = 512 if "avx512f" in flags else 256 if "avx2" in flags else 128
    lanes = vector_bits // 32
    if dtype == "bfloat16":  # VDPBF16PS: a pair of bf16 products per fp32 lane
        lanes *= 2 if "avx512_bf16" in flags else 1
    cores = os.cpu_count()
    clock = cpu_clock_ghz(info)
    return {
        "gflops": cores * clock * lanes * 2 * fma_units,
        "cores": cores,
        "clock_ghz": clock,
        "vector_bits": vector_bits,
        "fma_units": fma_units,
        "model": info.get("Model name"),
    }


def cpu_features() -> dict[str, bool]:
    """The ISA features that decide float32 and native bfloat16 speed."""
    flags = xla_setup.host_isa_flags()
    return {
        name: name in flags
        for name in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    }


def has_native_bf16(features: dict[str, bool] | None = None) -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX-512 BF16 or AMX)."""
    features = features or cpu_features()
    return features["avx512_bf16"] or features["amx_bf16"]


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (compilation, thread pools, page faults)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measured_matmul_gflops(size: int = 4096, dtype: str = "float32", repeats: int = 5) -> dict:
    """Best FLOP/s of a (size x size) @ (size x size) matmul in JAX and in PyTorch.

    PyTorch's bfloat16 matmul is left out on a CPU without native bf16: its fallback runs at
    about 1 GFLOP/s there (a 2-core AVX2 EPYC), minutes per 4096^3 product.
    """
    import jax
    import jax.numpy as jnp

    flops = 2 * size**3
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.dtype(dtype))
    matmul = jax.jit(jnp.matmul)
    jax_seconds = _best_seconds(lambda: matmul(a, a).block_until_ready(), repeats)
    result = {"jax": flops / jax_seconds / 1e9, "torch": None}
    if dtype != "bfloat16" or has_native_bf16():
        import torch

        torch.set_num_threads(os.cpu_count())
        b = torch.randn(size, size, dtype=getattr(torch, dtype))
        result["torch"] = flops / _best_seconds(lambda: b @ b, repeats) / 1e9
    best = max(value for value in result.values() if value is not None)
    return {"gflops": best, "by_framework": result, "size": size, "dtype": dtype}


def device_peak_tflops(dtype: str, override: float | None = None) -> float | None:
    """Peak of the default JAX accelerator: ``override``, else the table, else None (CPU)."""
    if override:
        return override
    import jax

    device = jax.devices()[0]
    if device.platform == "cpu":
        return None
    return KNOWN_PEAK_TFLOPS.get(device.device_kind, {}).get(dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description="Peak FLOP/s of this machine.")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--fma_units", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(
        json.dumps(
            {
                "measured": measured_matmul_gflops(args.size, args.dtype, args.repeats),
                "nominal": nominal_peak_gflops(args.dtype, args.fma_units),
                "features": cpu_features(),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
