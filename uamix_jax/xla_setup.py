"""Process-level settings for CPU hosts: they must be in the environment before start-up.

XLA reads XLA_FLAGS when JAX starts a backend; glibc reads GLIBC_TUNABLES when the process
starts, so setting the latter means running the program again (`restart_with_glibc_tunables`).
Both are inert for GPU/TPU computations and are skipped when JAX_PLATFORMS names only
accelerators. Values the user already gave to a flag or tunable are kept.
"""

from __future__ import annotations

import os
import sys

# XLA:CPU's default hands dots, convolutions and reductions to YNNPACK; this keeps YNNPACK
# for the dots only (XLA's own code runs the rest): -19% CPU time for the ViT-B encoder
# forward+backward, same loss (README, benchmarks section).
CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=individual_dot",)

# XLA:CPU allocates each step's temporaries (4.4 GB for ViT-B at batch 2) afresh, and glibc
# maps buffers that large from the kernel page by page: 800k page faults and 2.6 s of system
# time per ViT-B step. With transparent huge pages on the mapping (glibc >= 2.35; ignored
# elsewhere) that falls to 2k faults and 0.3-0.7 s (README, benchmarks section).
GLIBC_TUNABLES = ("glibc.malloc.hugetlb=1",)


def _merged(current: str, wanted: tuple[str, ...], separator: str) -> str:
    """``current`` plus each ``name=value`` of ``wanted`` whose name it does not set."""
    items = [item for item in current.split(separator) if item]
    present = {item.split("=", 1)[0] for item in items}
    return separator.join(items + [item for item in wanted if item.split("=", 1)[0] not in present])


def with_cpu_xla_flags(xla_flags: str) -> str:
    """``xla_flags`` plus each of CPU_XLA_FLAGS whose name it does not set already."""
    return _merged(xla_flags, CPU_XLA_FLAGS, " ")


def with_glibc_tunables(tunables: str) -> str:
    """``tunables`` plus each of GLIBC_TUNABLES whose name it does not set already."""
    return _merged(tunables, GLIBC_TUNABLES, ":")


def _runs_on_cpu() -> bool:
    platforms = os.environ.get("JAX_PLATFORMS", "")
    return not platforms or "cpu" in platforms.split(",")


def set_cpu_xla_flags() -> None:
    """Adds CPU_XLA_FLAGS to $XLA_FLAGS. Call before anything initialises a JAX backend."""
    if _runs_on_cpu():
        os.environ["XLA_FLAGS"] = with_cpu_xla_flags(os.environ.get("XLA_FLAGS", ""))


def restart_with_glibc_tunables() -> None:
    """Runs this program again (same pid, same command line) with GLIBC_TUNABLES set.

    Returns at once when they are set already (so after the restart), off Linux, or when
    JAX_PLATFORMS names only accelerators. Call first thing in a script's entry point.
    """
    current = os.environ.get("GLIBC_TUNABLES", "")
    wanted = with_glibc_tunables(current)
    if wanted == current or not sys.platform.startswith("linux") or not _runs_on_cpu():
        return
    os.environ["GLIBC_TUNABLES"] = wanted
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)
