"""TensorFlow import that keeps TensorFlow off every accelerator.

The input pipeline runs on the host CPU. JAX owns the GPUs and TPUs, so building
the first pipeline (``datasets.get_source``) hides them from TensorFlow first;
otherwise TensorFlow would reserve most of the GPU memory for itself. Importing
this module changes no device setting.
"""

import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _native_stderr_silenced():
    """Drops what C++ writes to file descriptor 2 inside the block (not Python's errors).

    TensorFlow's import prints "oneDNN custom operations are on" through absl's
    pre-initialisation logger on AVX-512 CPUs, whatever TF_CPP_MIN_LOG_LEVEL says.
    """
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


with _native_stderr_silenced():
    import tensorflow as tf

_HIDDEN = False


def hide_accelerators_from_tensorflow():
    """Makes TensorFlow see no GPU or TPU (idempotent; a no-op once TF has started them).

    Returns:
      True if the accelerators are hidden (or there were none), False if TensorFlow had
      already initialised its devices before this call and could not be changed.
    """
    global _HIDDEN
    if _HIDDEN:
        return True
    try:
        for kind in ("GPU", "TPU"):
            if tf.config.list_physical_devices(kind):
                tf.config.set_visible_devices([], kind)
        _HIDDEN = True
    except RuntimeError:  # Devices were already initialised by someone else.
        _HIDDEN = not tf.config.get_visible_devices("GPU")
    return _HIDDEN


__all__ = ["hide_accelerators_from_tensorflow", "tf"]
