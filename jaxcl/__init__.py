"""jaxcl: contrastive self-supervised learning in JAX and Flax.

Importing jaxcl changes no global state: no environment variable, JAX or
TensorFlow setting, or matplotlib backend. The CLIs apply jaxcl's XLA:CPU
defaults before JAX starts; in a notebook, call
``jaxcl.xla_defaults.apply_cpu_defaults()`` before the first JAX computation
for the same speed.
"""

from jaxcl import xla_defaults

__version__ = "0.1.0"


def load_encoder(workdir, *, step=None, scale_uint8=False):
    """Loads the encoder of a training run; see `jaxcl.trained_encoder.load_encoder`."""
    # Imported on use: `import jaxcl` stays light (no trainer, orbax or TensorFlow).
    from jaxcl.trained_encoder import load_encoder as _load_encoder

    return _load_encoder(workdir, step=step, scale_uint8=scale_uint8)


__all__ = ["__version__", "load_encoder", "xla_defaults"]
