"""Using a trained encoder downstream: ``jaxcl.load_encoder(workdir)``."""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax

from jaxcl.restore import restore_run

__all__ = ["load_encoder"]


def load_encoder(workdir: str, *, step: int | None = None) -> Callable[[jax.Array], jax.Array]:
    """Returns a function from images to frozen encoder features of a training run.

    Rebuilds the network from ``workdir/config.json`` and restores the encoder's
    parameters and BatchNorm statistics from the newest checkpoint (or ``step``).
    The function runs in evaluation mode (running BatchNorm statistics), takes
    float images in [0, 1] shaped (N, H, W, C) like the training inputs, and
    returns float32 (N, num_features) features. It is jitted; any batch size works.

    Args:
      workdir: the ``--workdir`` of a ``jaxcl.main`` run.
      step: a checkpoint step; None for the newest.

    Returns:
      ``encode(images) -> features``.

    Examples:
      >>> encode = jaxcl.load_encoder("runs/simclr_fashion_mnist")  # doctest: +SKIP
      >>> encode(images).shape  # doctest: +SKIP
      (16, 256)
    """
    run = restore_run(workdir, step=step)
    encode = jax.jit(run.trainer.feature_fn)
    return functools.partial(encode, run.trainer.encoder_variables(run.state))
