"""jaxcl: contrastive self-supervised learning in JAX and Flax.

Light at import time: TensorFlow and the training loop load only when used.
"""

from jaxcl.xla_defaults import apply_cpu_defaults as _apply_cpu_defaults

__version__ = "0.1.0"

_apply_cpu_defaults()


def load_encoder(workdir):
    """Loads the exported encoder of a training run; see `jaxcl.export.load_encoder`."""
    from jaxcl.export import load_encoder as _load_encoder

    return _load_encoder(workdir)


__all__ = ["__version__", "load_encoder"]
