"""Shared test set-up: eight fake CPU devices, jaxcl's XLA:CPU defaults, shared fixtures.

The device count must be set before JAX initialises its backends, which is why
this happens at import time of the conftest, before any test module imports jax.
"""

import contextlib
import logging
import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from jaxcl import xla_defaults

# The flags the CLIs set, so tests time and compile like the real runs.
xla_defaults.apply_cpu_defaults()

import jax  # noqa: E402
import pytest  # noqa: E402

from jaxcl.config import default_config  # noqa: E402

NUM_FAKE_DEVICES = 8


@pytest.fixture(scope="session")
def mesh():
    """A one-axis data-parallel mesh named 'data' over the eight fake CPU devices."""
    devices = jax.devices()
    assert len(devices) == NUM_FAKE_DEVICES, f"expected 8 fake CPU devices, got {len(devices)}"
    return jax.make_mesh((NUM_FAKE_DEVICES,), ("data",))


def make_tiny_config(method_name="simclr", **overrides):
    """A tiny synthetic-data config for a few steps; dotted keys reach sections."""
    config = default_config()
    config.method = method_name
    config.model = "resnet_tiny"
    config.model_options = {"zero_init_residual": False}
    config.dataset = "synthetic"
    config.dataset_options = {
        "image_shape": (16, 16, 1),
        "num_classes": 4,
        "num_examples": {"train": 64, "test": 32},
    }
    config.image_size = 16
    config.augmentation = "fashion_mnist"
    config.global_batch_size = 16
    config.num_steps = 4
    config.warmup_epochs = 0.0
    config.learning_rate = 0.5
    config.projection_dim = 8
    config.mocov3.predictor_hidden_dim = 16
    config.mocov2.queue_size = 40  # not a multiple of the batch: the ring buffer wraps
    config.log_every_steps = 1
    config.checkpoint_every_steps = 2
    config.max_checkpoints_to_keep = 5
    config.progress_bar = False
    config.eval.run_at_end = False
    for key, value in overrides.items():
        *sections, name = key.split(".")
        target = config
        for section in sections:
            target = target[section]
        target[name] = value
    return config


@pytest.fixture
def tiny_config():
    """``make_tiny_config``: a factory of tiny synthetic-data configs."""
    return make_tiny_config


class _CompileCounter(logging.Handler):
    def __init__(self, name):
        super().__init__(logging.WARNING)
        self.name, self.count = name, 0

    def emit(self, record):
        if record.getMessage().startswith(f"Compiling jit({self.name})"):
            self.count += 1


@contextlib.contextmanager
def count_compiles(name):
    """Counts compilations of the jitted function ``name`` (JAX's public compile log)."""
    counter = _CompileCounter(name)
    logger = logging.getLogger("jax")
    logger.addHandler(counter)
    try:
        with jax.log_compiles(True):
            yield counter
    finally:
        logger.removeHandler(counter)
