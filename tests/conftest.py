"""Test-wide setup: two virtual CPU devices so data-parallel code is exercised, and one
persistent compilation cache per test process (xdist worker), shared with the main.py
subprocesses it starts, so that a program compiled by one test is read by the next."""

import os
import shutil
import tempfile

from uamix_jax import xla_setup

# Must happen before jax is imported anywhere.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The CPU flags main.py adds, so in-process runs compute exactly what main.py runs compute.
xla_setup.set_cpu_xla_flags()

_CACHE_DIR = tempfile.mkdtemp(prefix="uamix_test_jax_cache_")
os.environ["JAX_COMPILATION_CACHE_DIR"] = _CACHE_DIR
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)
