"""main.py's CPU settings: added once, never over a value the user chose."""

import ctypes.util
import os
import subprocess
import sys

from uamix_jax import xla_setup

FLAG = xla_setup.cpu_xla_flags()[0]
NAME = FLAG.split("=", 1)[0]


def test_dot_library_follows_the_vector_isa():
    avx2 = {"fma", "avx2"}
    assert xla_setup.cpu_xla_flags(avx2) == (xla_setup.NO_YNNPACK,)
    assert xla_setup.cpu_xla_flags(avx2 | {"avx512f"}) == (xla_setup.YNNPACK_DOTS_ONLY,)
    assert xla_setup.cpu_xla_flags({"neon", "asimd"}) == (xla_setup.YNNPACK_DOTS_ONLY,)
    assert xla_setup.cpu_xla_flags(set()) == (xla_setup.YNNPACK_DOTS_ONLY,)
    assert NAME == xla_setup.NO_YNNPACK.split("=", 1)[0]  # one flag name: the user's wins


def test_flags_are_appended_to_the_users_flags():
    assert xla_setup.with_cpu_xla_flags("") == FLAG
    assert xla_setup.with_cpu_xla_flags("--xla_dump_to=/tmp/x") == f"--xla_dump_to=/tmp/x {FLAG}"


def test_a_flag_the_user_set_is_kept():
    for users in (xla_setup.NO_YNNPACK, xla_setup.YNNPACK_DOTS_ONLY):
        assert xla_setup.with_cpu_xla_flags(users) == users


def test_environment_is_updated_on_cpu_and_left_alone_for_accelerators(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    monkeypatch.setenv("JAX_PLATFORMS", "tpu")
    xla_setup.set_cpu_xla_flags()
    assert NAME not in os.environ["XLA_FLAGS"]
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    xla_setup.set_cpu_xla_flags()
    xla_setup.set_cpu_xla_flags()
    assert os.environ["XLA_FLAGS"].split() == [
        "--xla_force_host_platform_device_count=2",
        FLAG,
    ]


def test_glibc_tunables_are_merged_with_colons_and_keep_the_users_value():
    tunable = xla_setup.GLIBC_TUNABLES[0]
    name = tunable.split("=", 1)[0]
    assert xla_setup.with_glibc_tunables("") == tunable
    assert xla_setup.with_glibc_tunables("glibc.malloc.arena_max=2") == (
        f"glibc.malloc.arena_max=2:{tunable}"
    )
    assert xla_setup.with_glibc_tunables(f"{name}=0") == f"{name}=0"


def test_host_allocator_prefers_tcmalloc_and_keeps_the_users_settings(monkeypatch):
    tunables = xla_setup.with_glibc_tunables("")
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert xla_setup.host_allocator_environment({}) == {"GLIBC_TUNABLES": tunables}
    assert xla_setup.host_allocator_environment({"GLIBC_TUNABLES": tunables}) == {}
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: f"lib{name}.so.4")
    assert xla_setup.host_allocator_environment({"LD_PRELOAD": "libfoo.so"}) == {
        "GLIBC_TUNABLES": tunables,
        "LD_PRELOAD": "libfoo.so libtcmalloc_minimal.so.4",
        "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": xla_setup.TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD,
    }
    mine = {"GLIBC_TUNABLES": tunables, "LD_PRELOAD": "/opt/libtcmalloc.so"}
    assert xla_setup.host_allocator_environment(mine) == {}


def test_a_script_restarts_itself_once_with_the_allocator_settings(tmp_path):
    """The restarted program sees the settings, keeps its arguments and runs its body once."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import os, sys\n"
        "from uamix_jax import xla_setup\n"
        "print('start', flush=True)\n"
        "xla_setup.restart_with_host_allocator()\n"
        "print('body', sys.argv[1:], os.environ['GLIBC_TUNABLES'])\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GLIBC_TUNABLES", "JAX_PLATFORMS", "LD_PRELOAD")
    }
    out = subprocess.run(
        [sys.executable, str(script), "--flag=1"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:-1] == [
        "start",
        "start",
        f"body ['--flag=1'] {xla_setup.with_glibc_tunables('')}",
    ]
