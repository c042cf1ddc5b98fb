"""The interface between the training loop and a contrastive method."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from jaxcl import losses


@dataclasses.dataclass(frozen=True)
class Embeddings:
    """The per-device outputs a method's loss sees, each shaped (n, views, dim).

    Attributes:
      projections: online projection-head outputs.
      predictions: online predictor outputs (MoCo v3), else None.
      momentum_projections: momentum-encoder projections with the gradient
        stopped, else None.
    """

    projections: jax.Array
    predictions: jax.Array | None = None
    momentum_projections: jax.Array | None = None


# loss(embeddings, labels, extras, config, axis_name) -> (loss, new_extras, metrics)
LossFn = Callable[[Embeddings, jax.Array, dict, Any, str | None], tuple[jax.Array, dict, dict]]


@dataclasses.dataclass(frozen=True)
class Method:
    """A contrastive method as the training loop needs it.

    Attributes:
      name: the config name (``config.method``).
      loss: the per-device loss; see ``LossFn``.
      uses_momentum_encoder: keep an exponential moving average of the encoder
        and projector (MoCo).
      momentum_schedule: ``'constant'`` (MoCo v2) or ``'cosine'`` from the
        configured decay towards 1 (MoCo v3, BYOL).
      init_extras: builds method state kept in the train state (the MoCo queue)
        from ``(config, rng)``; None when the method has none.
      uses_labels: the loss uses class labels (SupCon).
      paper: the reference followed.
    """

    name: str
    loss: LossFn
    uses_momentum_encoder: bool = False
    momentum_schedule: str = "constant"
    init_extras: Callable[[Any, jax.Array], dict] | None = None
    uses_labels: bool = False
    paper: str = ""


def two_views(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Splits (n, 2, d) embeddings into the (n, d) embeddings of each view."""
    if x.shape[1] != 2:
        raise ValueError(f"this method needs num_views=2, got {x.shape[1]} views; set num_views=2.")
    return x[:, 0], x[:, 1]


def monitoring_metrics(projections: jax.Array, axis_name: str | None) -> dict[str, jax.Array]:
    """Alignment of the first two views and uniformity of the first view's projections.

    Logged for every method (Wang & Isola 2020), over the global batch.
    """
    projections = jax.lax.stop_gradient(projections)
    return {
        "alignment": losses.alignment(projections[:, 0], projections[:, 1], axis_name=axis_name),
        "uniformity": losses.uniformity(projections[:, 0], axis_name=axis_name),
    }
