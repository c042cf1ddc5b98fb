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
