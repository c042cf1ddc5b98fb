"""XLA:CPU options that jaxcl sets by default, before JAX starts its CPU backend.

jaxlib 0.10 hands every convolution on the CPU to YNNPACK. For the small-channel
ResNets that train on CPUs (the Fashion-MNIST default, SimCLR's CIFAR ResNet-18)
XLA's own (Eigen) convolutions are faster: measured in one process each on the
2-core development machine, the default config's train step went from 1.22 s to
0.76 s (``python bench/first_step.py``, with and without the flag), and the
ResNet-18 benchmark step against PyTorch from 0.77-0.95x to 1.01-1.18x
(``python bench/train_step.py``; docs/benchmarks.md).

XLA reads ``XLA_FLAGS`` once, when the first backend starts, so
``apply_cpu_defaults()`` only takes effect before the first JAX computation
(importing ``jax`` alone starts nothing). The CLIs (``jaxcl.main``,
``jaxcl.eval``) call it first thing; importing ``jaxcl`` does not. In a
notebook, the one-liner is ``jaxcl.xla_defaults.apply_cpu_defaults()`` in the
first cell. It never overrides a value the user set, it leaves jaxlib versions
it was not measured on alone (an unknown flag aborts XLA), and
``JAXCL_XLA_DEFAULTS=0`` turns it off.
"""

from __future__ import annotations

import os
from importlib import metadata

import jax

from jaxcl import workdir_io

YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
# Keep YNNPACK's other fusions; route single convolutions to XLA's own emitter.
CPU_FLAGS = (f"{YNN_FUSION_FLAG}=-individual_convolution",)
# The jaxlib releases on which the flag exists and was measured to help.
MEASURED_JAXLIB = ("0.10.",)


def _jaxlib_version() -> str:
    try:
        return metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return ""


def apply_cpu_defaults(environ=os.environ) -> list[str]:
    """Appends jaxcl's XLA:CPU flags to ``XLA_FLAGS`` unless told not to.

    Args:
      environ: the environment to update (``os.environ``; a dict in tests).

    Returns:
      The flags added (empty when disabled, already set, or on another jaxlib).
    """
    if environ.get("JAXCL_XLA_DEFAULTS", "1") == "0":
        return []
    if not _jaxlib_version().startswith(MEASURED_JAXLIB):
        return []
    existing = environ.get("XLA_FLAGS", "")
    added = [flag for flag in CPU_FLAGS if flag.split("=")[0] not in existing]
    if added:
        environ["XLA_FLAGS"] = " ".join([existing, *added]).strip()
    return added


DEFAULT_COMPILATION_CACHE = os.path.join("~", ".cache", "jaxcl", "xla")


def enable_compilation_cache(directory: str = DEFAULT_COMPILATION_CACHE) -> str | None:
    """Turns on JAX's persistent compilation cache in ``directory``.

    A run compiles its train step (seconds) and, on XLA:CPU, one small program
    per parameter shape while initialising the network (about 0.25 s each, 38 for
    the Fashion-MNIST default). With the cache, a second run of the same config
    (a resume, an evaluation, the next experiment) loads them from disk instead.
    Programs of any compile time are kept, since the small ones add up.

    Args:
      directory: where to keep compiled programs; '' leaves the cache off.

    Returns:
      The cache directory (absolute if local), or None when left off.
    """
    if not directory:
        return None
    # JAX reads and writes the cache through etils.epath: gs:// works too.
    resolved = workdir_io.resolve(directory)
    resolved.mkdir(parents=True, exist_ok=True)
    path = str(resolved)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
