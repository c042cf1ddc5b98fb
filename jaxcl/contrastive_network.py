"""The network a contrastive method trains: encoder, heads and the online probe.

One NNX module so that a single ``functional.split`` gives one params tree and one
BatchNorm-statistics tree for everything the optimizer updates. Its top-level
keys are the parts (``encoder``, ``projector``, ``predictor``, ``probe``), which
lets the momentum encoder reuse the ``encoder`` and ``projector`` subtrees.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxcl import models
from jaxcl.methods import Method


class ContrastiveNetwork(nnx.Module):
    """Encoder, projection head and optional predictor and linear probe.

    Calling it returns a dict with ``features`` (encoder output), ``projections``,
    and, when present, ``predictions`` (MoCo v3 predictor on the projections) and
    ``probe_logits``: the online linear probe of SimCLR, trained jointly on
    features with their gradient stopped, so it monitors the representation
    without shaping it.
    """

    def __init__(
        self,
        encoder: nnx.Module,
        projector: nnx.Module,
        predictor: nnx.Module | None = None,
        probe: nnx.Module | None = None,
    ):
        """Wraps already-built modules.

        Args:
          encoder: a module mapping NHWC images to (batch, features).
          projector: the projection head on the features.
          predictor: optional prediction head on the projections (MoCo v3).
          probe: optional linear classifier on stop-gradient features.
        """
        self.encoder = encoder
        self.projector = projector
        self.predictor = predictor
        self.probe = probe

    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        features = self.encoder(images)
        outputs = {"features": features, "projections": self.projector(features)}
        if self.predictor is not None:
            outputs["predictions"] = self.predictor(outputs["projections"])
        if self.probe is not None:
            outputs["probe_logits"] = self.probe(jax.lax.stop_gradient(features))
        return {name: value.astype(jnp.float32) for name, value in outputs.items()}


def online_probe_metrics(
    probe_logits: jax.Array, labels: jax.Array, axis_name: str | None
) -> tuple[jax.Array, jax.Array]:
    """Cross-entropy and top-1 of the online probe over the labelled global batch.

    Args:
      probe_logits: (n, num_classes) logits of this device's examples.
      labels: (n,) int labels; -1 marks unlabelled examples, left out of both.
      axis_name: the data-parallel mesh axis (inside ``jax.shard_map``), or None.

    Returns:
      ``(probe_loss, probe_top1)``, means over the labelled examples of every device.
    """
    labelled = (labels >= 0).astype(jnp.float32)
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(
        probe_logits, jnp.maximum(labels, 0)
    )
    correct = (jnp.argmax(probe_logits, axis=1) == labels).astype(jnp.float32)
    sums = jnp.stack(
        [jnp.sum(labelled), jnp.sum(cross_entropy * labelled), jnp.sum(correct * labelled)]
    )
    if axis_name is not None:
        sums = jax.lax.psum(sums, axis_name)
    count = jnp.maximum(sums[0], 1.0)
    return sums[1] / count, sums[2] / count


def resolve_compute_dtype(name: str) -> jnp.dtype:
    """``'auto'`` is float32 on CPU and bfloat16 on GPU/TPU; other names as given."""
    if name == "auto":
        return jnp.dtype(jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16)
    return jnp.dtype(name)


def build_network(
    config, method: Method, *, num_classes: int, in_channels: int, bn_axis_name, rngs, online=True
) -> ContrastiveNetwork:
    """Builds the network named by a training config for ``method``.

    Args:
      config: the ConfigDict (keys ``model``, ``model_options``, ``projector``,
        ``projection_dim``, ``projection_hidden_dim``, ``projection_layers``,
        ``compute_dtype`` and the
        method's section, which its predictor reads).
      method: the method trained; its ``build_predictor`` adds a predictor.
      num_classes: classes of the online probe.
      in_channels: channels of the input images.
      bn_axis_name: the mesh axis for global BatchNorm (None for one device).
      rngs: NNX random generators for initialisation.
      online: True for the trained network (predictor and probe included); False
        for the momentum encoder (encoder and projector only).

    Returns:
      A ``ContrastiveNetwork``.
    """
    dtype = resolve_compute_dtype(config.compute_dtype)
    encoder = models.create(
        config.model,
        in_channels=in_channels,
        bn_axis_name=bn_axis_name,
        dtype=dtype,
        rngs=rngs,
        **dict(config.model_options),
    )
    # 0 keeps the head's own default hidden width (e.g. the encoder's width).
    hidden = {}
    if config.projection_hidden_dim:
        hidden["hidden_features"] = config.projection_hidden_dim
    if config.projection_layers:
        hidden["num_layers"] = config.projection_layers
    projector = models.create(
        config.projector,
        in_features=encoder.num_features,
        out_features=config.projection_dim,
        bn_axis_name=bn_axis_name,
        dtype=dtype,
        rngs=rngs,
        **hidden,
    )
    predictor = probe = None
    if online and method.build_predictor is not None:
        predictor = method.build_predictor(
            config[method.name],
            config.projection_dim,
            bn_axis_name=bn_axis_name,
            dtype=dtype,
            rngs=rngs,
        )
    if online:
        probe = models.create(
            "linear_classifier",
            in_features=encoder.num_features,
            num_classes=num_classes,
            rngs=rngs,
        )
    return ContrastiveNetwork(encoder, projector, predictor, probe)
