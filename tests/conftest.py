"""Shared test set-up: eight fake CPU devices and TensorFlow kept off accelerators.

The device count must be set before JAX initialises its backends, which is why
this happens at import time of the conftest, before any test module imports jax.
"""

import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import pytest

NUM_FAKE_DEVICES = 8


@pytest.fixture(scope="session")
def mesh():
    """A one-axis data-parallel mesh named 'data' over the eight fake CPU devices."""
    devices = jax.devices()
    assert len(devices) == NUM_FAKE_DEVICES, f"expected 8 fake CPU devices, got {len(devices)}"
    return jax.make_mesh((NUM_FAKE_DEVICES,), ("data",))
