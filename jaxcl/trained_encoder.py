"""Using a trained encoder downstream: ``jaxcl.load_encoder(workdir)`` and a portable export.

``export_encoder`` serialises the encoder, weights included, with
``jax.export`` (StableHLO, batch-polymorphic): the file loads with JAX alone,
without jaxcl, its config or its dataset::

    import jax
    with open("encoder.bin", "rb") as f:
        encoder = jax.export.deserialize(bytearray(f.read()))
    features = encoder.call(images)  # (N, H, W, C) float32 in [0, 1]
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from etils import epath

from jaxcl.restore import restore_run

__all__ = ["export_encoder", "load_encoder", "load_exported_encoder"]


def load_encoder(workdir: str, *, step: int | None = None) -> Callable[[jax.Array], jax.Array]:
    """Returns a function from images to frozen encoder features of a training run.

    Rebuilds the network from ``workdir/config.json`` and restores the encoder's
    parameters and BatchNorm statistics from the newest checkpoint (or ``step``).
    The run's dataset need not be on this machine.
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
    run = restore_run(workdir, step=step, check_data_files=False)
    encode = jax.jit(run.trainer.feature_fn)
    return functools.partial(encode, run.trainer.encoder_variables(run.state))


def export_encoder(
    workdir: str, out: str, *, step: int | None = None, platforms: tuple[str, ...] | None = None
) -> jax.export.Exported:
    """Writes the encoder of a run as a serialized ``jax.export`` artifact.

    The exported function is ``load_encoder``'s: images (N, H, W, C) float32
    in [0, 1], any N, to float32 (N, num_features) features, with the
    restored parameters and BatchNorm statistics as constants.

    Args:
      workdir: the ``--workdir`` of a ``jaxcl.main`` run.
      out: the file to write (local or any ``etils.epath`` filesystem).
      step: a checkpoint step; None for the newest.
      platforms: platforms to lower for, e.g. ('cpu', 'cuda', 'tpu');
        None: this machine's default backend.

    Returns:
      The ``jax.export.Exported`` that was written.
    """
    run = restore_run(workdir, step=step, check_data_files=False)
    variables = jax.device_get(run.trainer.encoder_variables(run.state))
    size = run.config.image_size
    (batch,) = jax.export.symbolic_shape("batch")
    images = jax.ShapeDtypeStruct((batch, size, size, run.trainer.in_channels), jnp.float32)
    feature_fn = run.trainer.feature_fn
    exported = jax.export.export(
        jax.jit(lambda images: feature_fn(variables, images)), platforms=platforms
    )(images)
    epath.Path(out).write_bytes(bytes(exported.serialize()))
    return exported


def load_exported_encoder(path: str) -> Callable[[jax.Array], jax.Array]:
    """The encoder of an ``export_encoder`` file: ``encode(images) -> features``."""
    exported = jax.export.deserialize(bytearray(epath.Path(path).read_bytes()))
    return exported.call
