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

import io
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from jaxcl import models, weights
from jaxcl.models import functional
from jaxcl.restore import restore_run

__all__ = [
    "EncoderInputError",
    "export_encoder",
    "export_torch",
    "load_encoder",
    "load_exported_encoder",
    "trained_encoder_module",
]


class EncoderInputError(ValueError):
    """Images a trained encoder cannot take; the message says what it takes."""


def _check_images(images, image_size: int, channels: int, scale_uint8: bool):
    """``images`` as float32 in [0, 1], or an `EncoderInputError` naming the problem."""
    dtype = np.dtype(images.dtype if hasattr(images, "dtype") else np.asarray(images).dtype)
    expected = f"(N, {image_size}, {image_size}, {channels}) float images in [0, 1]"
    shape = tuple(np.shape(images))
    if len(shape) != 4 or shape[3] != channels:
        raise EncoderInputError(
            f"images of shape {shape}: the encoder takes {expected}; add the batch axis "
            "(images[None]) or convert the channels"
        )
    if np.issubdtype(dtype, np.integer) or dtype == np.bool_:
        if not scale_uint8 or dtype != np.uint8:
            raise EncoderInputError(
                f"images of dtype {dtype}: the encoder takes {expected}; divide by 255 "
                "(images / 255.0), or pass uint8 images with load_encoder(..., scale_uint8=True)"
            )
        return jnp.asarray(images, jnp.float32) / 255.0
    if not np.issubdtype(dtype, np.floating):
        raise EncoderInputError(f"images of dtype {dtype}: the encoder takes {expected}")
    return images


def load_encoder(
    workdir: str, *, step: int | None = None, scale_uint8: bool = False
) -> Callable[[jax.Array], jax.Array]:
    """Returns a function from images to frozen encoder features of a training run.

    Rebuilds the network from ``workdir/config.json`` and restores the encoder's
    parameters and BatchNorm statistics from the newest checkpoint (or ``step``).
    The run's dataset need not be on this machine.
    The function runs in evaluation mode (running BatchNorm statistics), takes
    float images in [0, 1] shaped (N, H, W, C) like the evaluation inputs (side
    ``config.eval.image_size``, else ``config.image_size``), and
    returns float32 (N, num_features) features. It is jitted; any batch size works.
    Integer images are refused (features of 0-255 pixels would be silently
    wrong) unless ``scale_uint8``, which divides uint8 images by 255; so are
    images without the batch axis or with other channels than the training
    inputs. Other image sizes are accepted (the encoder is convolutional).

    Args:
      workdir: the ``--workdir`` of a ``jaxcl.main`` run.
      step: a checkpoint step; None for the newest.
      scale_uint8: accept uint8 images in [0, 255] and scale them to [0, 1].

    Returns:
      ``encode(images) -> features``.

    Examples:
      >>> encode = jaxcl.load_encoder("runs/simclr_fashion_mnist")  # doctest: +SKIP
      >>> encode(images).shape  # doctest: +SKIP
      (16, 256)
    """
    run = restore_run(workdir, step=step, check_data_files=False)
    features = jax.jit(run.trainer.feature_fn)
    variables = run.trainer.encoder_variables(run.state)
    size, channels = run.trainer.data.eval_image_size, run.trainer.in_channels

    def encode(images):
        return features(variables, _check_images(images, size, channels, scale_uint8))

    return encode


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
    size = run.trainer.data.eval_image_size
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


def trained_encoder_module(workdir: str, *, step: int | None = None):
    """The encoder of a training run as an NNX module holding its trained arrays.

    Args:
      workdir: the ``--workdir`` of a ``jaxcl.main`` run.
      step: a checkpoint step; None for the newest.

    Returns:
      ``(encoder, run)``: the encoder module (a ResNet or VisionTransformer) and
      the ``RestoredRun`` it came from.
    """
    run = restore_run(workdir, step=step, check_data_files=False)
    variables = jax.device_get(run.trainer.encoder_variables(run.state))
    network = functional.merge(run.trainer.graphdef, variables["params"], variables["batch_stats"])
    return network.encoder, run


def export_torch(workdir: str, out: str | None = None, *, step: int | None = None) -> dict:
    """Writes the encoder of a jaxcl run as a PyTorch state dict.

    ResNets get torchvision's keys (they load into ``torchvision.models.resnet50()``
    with ``load_state_dict(..., strict=False)``: there is no ``fc``), ViTs timm's,
    with MoCo v3's fixed sin-cos ``pos_embed`` at the run's evaluation image size.
    ``jaxcl.weights.import_torch`` reads the file back into the same encoder.

    Args:
      workdir: the ``--workdir`` of a ``jaxcl.main`` run.
      out: a file (local or any ``etils.epath`` filesystem) to write with
        ``torch.save``; None writes nothing.
      step: a checkpoint step; None for the newest.

    Returns:
      The state dict, ``{key: torch.Tensor}``.
    """
    torch = weights.torch_module()
    encoder, run = trained_encoder_module(workdir, step=step)
    state_dict = weights.torch_state_dict_of(encoder)
    if isinstance(encoder, models.VisionTransformer) and encoder.position_embedding == "sincos":
        size = run.trainer.data.eval_image_size
        state_dict["pos_embed"] = weights.sincos_pos_embed_of(encoder, size)
    tensors = {key: torch.from_numpy(np.array(v)) for key, v in state_dict.items()}
    if out is not None:
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        epath.Path(out).write_bytes(buffer.getvalue())
    return tensors
