"""Process-level settings for CPU hosts: they must be in the environment before start-up.

The process-wide half of the XLA:CPU tuning whose layers are in `uamix_jax.models.cpu_kernels`;
it lives outside the models package because main.py applies it before anything imports JAX.
XLA reads XLA_FLAGS when JAX starts a backend; the dynamic loader and glibc read
LD_PRELOAD and GLIBC_TUNABLES when the process starts, so setting those means running the
program again (`restart_with_host_allocator`). All are inert for GPU/TPU computations and
are skipped when JAX_PLATFORMS names only accelerators. Values the user gave are kept.
Measurements: benchmarks/NOTES.md#xla-setup.
"""

from __future__ import annotations

import ctypes.util
import os
import sys

# Which library runs XLA:CPU's dots. XLA's default hands dots, convolutions and reductions
# to YNNPACK. With AVX-512, YNNPACK for the dots only (XLA's own code for the rest) is
# faster than the default, and YNNPACK's is XLA:CPU's only fast bfloat16 dot
# (AVX512-BF16). With AVX2 only, XLA's own (Eigen) dots beat YNNPACK's at the step's
# shapes, so YNNPACK is switched off.
YNNPACK_DOTS_ONLY = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
NO_YNNPACK = "--xla_cpu_experimental_ynn_fusion_type="

# XLA:CPU allocates each step's temporaries (gigabytes for ViT-B) afresh. glibc returns
# buffers that large to the kernel at every free, so each step faults them in again, and on
# a VM that hands freed memory back to its host a step that follows another process's work
# pays twice. tcmalloc keeps freed memory for reuse: no faults after the first step. It is
# Debian's libtcmalloc-minimal4 (`apt install libtcmalloc-minimal4`), preloaded when
# installed; without it, huge pages for glibc's mappings (glibc >= 2.35; ignored elsewhere)
# cut most of the faults.
TCMALLOC = "tcmalloc_minimal"
GLIBC_TUNABLES = ("glibc.malloc.hugetlb=1",)
# tcmalloc logs every allocation above 1 GiB; a step's temporaries are one.
TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD = str(1 << 40)


def _merged(current: str, wanted: tuple[str, ...], separator: str) -> str:
    """``current`` plus each ``name=value`` of ``wanted`` whose name it does not set."""
    items = [item for item in current.split(separator) if item]
    present = {item.split("=", 1)[0] for item in items}
    return separator.join(items + [item for item in wanted if item.split("=", 1)[0] not in present])


def host_isa_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_xla_flags(isa_flags: set[str] | None = None) -> tuple[str, ...]:
    """The XLA flags for a CPU with these feature flags (default: this host's).

    AVX2 without AVX-512 gets XLA's own dots; everything else, ARM and unknown CPUs
    included, YNNPACK's dots (see the comment above YNNPACK_DOTS_ONLY).
    """
    isa_flags = host_isa_flags() if isa_flags is None else isa_flags
    if "avx2" in isa_flags and "avx512f" not in isa_flags:
        return (NO_YNNPACK,)
    return (YNNPACK_DOTS_ONLY,)


def with_cpu_xla_flags(xla_flags: str) -> str:
    """``xla_flags`` plus each of `cpu_xla_flags` whose name it does not set already."""
    return _merged(xla_flags, cpu_xla_flags(), " ")


def with_glibc_tunables(tunables: str) -> str:
    """``tunables`` plus each of GLIBC_TUNABLES whose name it does not set already."""
    return _merged(tunables, GLIBC_TUNABLES, ":")


def _runs_on_cpu() -> bool:
    platforms = os.environ.get("JAX_PLATFORMS", "")
    return not platforms or "cpu" in platforms.split(",")


def set_cpu_xla_flags() -> None:
    """Adds `cpu_xla_flags` to $XLA_FLAGS. Call before anything initialises a JAX backend."""
    if _runs_on_cpu():
        os.environ["XLA_FLAGS"] = with_cpu_xla_flags(os.environ.get("XLA_FLAGS", ""))


def host_allocator_environment(environ: dict[str, str]) -> dict[str, str]:
    """The variables of ``environ`` to change for the host allocator; {} when none."""
    changes = {"GLIBC_TUNABLES": with_glibc_tunables(environ.get("GLIBC_TUNABLES", ""))}
    library = ctypes.util.find_library(TCMALLOC)
    preload = environ.get("LD_PRELOAD", "")
    if library and "tcmalloc" not in preload:
        changes["LD_PRELOAD"] = " ".join(filter(None, [preload, library]))
        changes["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"] = environ.get(
            "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD", TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD
        )
    return {name: value for name, value in changes.items() if environ.get(name) != value}


def restart_with_host_allocator() -> None:
    """Runs this program again (same pid, same command line) with the allocator settings.

    Returns at once when they are in place (so after the restart), off Linux, or when
    JAX_PLATFORMS names only accelerators. Call first thing in a script's entry point.
    """
    if not sys.platform.startswith("linux") or not _runs_on_cpu():
        return
    changes = host_allocator_environment(dict(os.environ))
    if not changes:
        return
    os.environ.update(changes)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)
