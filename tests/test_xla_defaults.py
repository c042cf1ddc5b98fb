"""jaxcl's default XLA:CPU flags: set once, never over the user's, switchable off."""

import os

from jaxcl import xla_defaults

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"


def test_adds_the_flag_to_other_flags(monkeypatch):
    monkeypatch.setattr(xla_defaults, "_jaxlib_version", lambda: "0.10.2")
    environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    assert xla_defaults.apply_cpu_defaults(environ) == [FLAG]
    assert environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {FLAG}"
    # A second import (or call) adds nothing twice.
    assert xla_defaults.apply_cpu_defaults(environ) == []
    assert environ["XLA_FLAGS"].count("ynn_fusion_type") == 1


def test_keeps_the_users_own_value(monkeypatch):
    monkeypatch.setattr(xla_defaults, "_jaxlib_version", lambda: "0.10.2")
    environ = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=default"}
    assert xla_defaults.apply_cpu_defaults(environ) == []
    assert environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=default"


def test_switched_off_or_unmeasured_jaxlib_adds_nothing(monkeypatch):
    monkeypatch.setattr(xla_defaults, "_jaxlib_version", lambda: "0.10.2")
    environ = {"JAXCL_XLA_DEFAULTS": "0"}
    assert xla_defaults.apply_cpu_defaults(environ) == []
    assert "XLA_FLAGS" not in environ
    monkeypatch.setattr(xla_defaults, "_jaxlib_version", lambda: "0.12.0")
    assert xla_defaults.apply_cpu_defaults({}) == []


def test_importing_jaxcl_set_it_for_this_process():
    # conftest imported jax without starting a backend; jaxcl's import added the flag.
    measured = xla_defaults._jaxlib_version().startswith(xla_defaults.MEASURED_JAXLIB)
    if measured and os.environ.get("JAXCL_XLA_DEFAULTS") != "0":
        assert FLAG in os.environ["XLA_FLAGS"]


def test_compilation_cache_is_written_then_reused(tmp_path):
    import subprocess
    import sys

    cache = tmp_path / "cache"
    script = (
        "import sys, jax, jaxcl\n"
        "from jaxcl.xla_defaults import enable_compilation_cache\n"
        "enable_compilation_cache(sys.argv[1])\n"
        "print(float(jax.jit(lambda x: (x * 2.0).sum())(jax.numpy.arange(4.0))))\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    outputs, entries = [], []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", script, str(cache)], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(done.stdout.strip())
        entries.append(sorted(path.name for path in cache.iterdir()))
    assert outputs == ["12.0", "12.0"]
    assert entries[0], "the first run wrote nothing to the cache"
    assert entries[1] == entries[0], "the second run compiled again instead of reusing"


def test_compilation_cache_left_off_for_empty_directory():
    assert xla_defaults.enable_compilation_cache("") is None
