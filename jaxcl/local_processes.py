"""Starting several ``jax.distributed`` CPU processes on this machine.

The multi-host path is exercised on one machine by launching processes that
talk over localhost with gloo collectives, each with fake CPU devices: the
tests, ``bench/multiprocess_equivalence.py`` and the pod rehearsal
(``jaxcl.experiments.pod_rehearsal``) share these helpers.
"""

from __future__ import annotations

import os
import re
import socket

__all__ = ["cpu_environment", "free_port"]

_DEVICE_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\d+")


def free_port() -> int:
    """A TCP port on localhost that is free now (for a coordinator address)."""
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def cpu_environment(devices_per_process: int, base: dict | None = None) -> dict:
    """An environment for a child process with ``devices_per_process`` fake CPU devices.

    Args:
      devices_per_process: the value of ``--xla_force_host_platform_device_count``
        (replacing any in ``XLA_FLAGS``).
      base: the environment to start from (default: this process's).

    Returns:
      A new dict: JAX on CPU only, TensorFlow's C++ logging quiet, and Python
      tracebacks of every thread dumped on SIGABRT (``PYTHONFAULTHANDLER``), so
      a hung process can be asked where it is.
    """
    env = dict(os.environ if base is None else base)
    flags = _DEVICE_COUNT_FLAG.sub("", env.get("XLA_FLAGS", ""))
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices_per_process}"
    env["XLA_FLAGS"] = env["XLA_FLAGS"].strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONFAULTHANDLER"] = "1"
    return env
