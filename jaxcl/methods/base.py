"""The interface between the trainer and a contrastive method.

A method is a ``Method`` value: its loss, its own config section and the parts
it needs (a predictor, a momentum encoder and its decay schedule, extra state
such as a queue, labels). The trainer and the network builder read only these
fields, never a method's name, so adding a method touches no trainer code: write
a module with its loss and its ``Method``, and list it in
``jaxcl.methods.registry``.

Example: a BYOL-style method (Grill et al. 2020) needs a predictor, a momentum
(target) network whose decay rises to 1 on a cosine, and its own settings::

    def byol_loss(embeddings, labels, extras, settings, axis_name, step):
        p1, p2 = two_views(embeddings.predictions)
        t1, t2 = two_views(embeddings.momentum_projections)
        cosine = lambda p, t: jnp.sum(l2_normalize(p) * l2_normalize(t), axis=-1)
        loss = 4.0 - 2.0 * jnp.mean(cosine(p1, t2) + cosine(p2, t1))
        if axis_name is not None:  # the mean over the global batch
            loss = jax.lax.pmean(loss, axis_name)
        return loss, extras, {}

    BYOL = Method(
        name="byol",
        loss=byol_loss,
        defaults=lambda: {"momentum_encoder_decay": 0.996, "predictor_hidden_dim": 4096},
        build_predictor=mlp_predictor,  # (settings, features, ...) -> nnx.Module
        momentum_decay=cosine_momentum_decay,
        paper="Grill et al. 2020, arXiv:2006.07733",
    )

Its keys then live in ``config.byol`` (``--config.byol.momentum_encoder_decay=0.99``),
checked by ``validate`` before anything is built.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcl import losses


@dataclasses.dataclass(frozen=True)
class Embeddings:
    """The per-device outputs a method's loss sees, each shaped (n, views, dim).

    Attributes:
      projections: online projection-head outputs.
      predictions: online predictor outputs (methods with a predictor), else None.
      momentum_projections: momentum-encoder projections with the gradient
        stopped, else None.
    """

    projections: jax.Array
    predictions: jax.Array | None = None
    momentum_projections: jax.Array | None = None


# loss(embeddings, labels, extras, settings, axis_name, step) -> (loss, new_extras,
# metrics), with settings the method's own config section and step the number of
# steps done (for schedules inside a loss, such as DINO's teacher temperature).
LossFn = Callable[
    [Embeddings, jax.Array, dict, Any, str | None, jax.Array], tuple[jax.Array, dict, dict]
]


class MethodSettingError(ValueError):
    """A method's config section holds a value the method cannot use.

    Attributes:
      key: the dotted config key, e.g. ``'mocov2.queue_size'``.
      value: the value given.
    """

    def __init__(self, key: str, value, problem: str, fix: str):
        super().__init__(f"config.{key}={value!r} {problem}; {fix}.")
        self.key = key
        self.value = value


@dataclasses.dataclass(frozen=True)
class Method:
    """A contrastive method as the trainer needs it.

    Attributes:
      name: the config name (``config.method``) and the name of its section
        (``config.<name>``).
      loss: the per-device loss; see ``LossFn``. It receives the method's
        section as ``settings``.
      defaults: the method's section with its default values, as a dict.
      validate: ``validate(settings, config)`` raises ``MethodSettingError`` for
        values the method cannot use; it runs before anything is built.
      build_predictor: ``(settings, in_features, *, bn_axis_name, dtype, rngs)
        -> nnx.Module``, a prediction head on the projections (MoCo v3, BYOL);
        None for none.
      momentum_decay: ``(settings, step, total_steps) -> decay`` of a momentum
        encoder (an exponential moving average of encoder and projector, the
        target network of MoCo and BYOL); None for a method without one.
      init_extras: ``(settings, config, rng) -> dict`` of method state kept in
        the train state (the MoCo queue); None when the method has none.
      uses_labels: the loss uses class labels (SupCon).
      paper: the reference followed.
    """

    name: str
    loss: LossFn
    defaults: Callable[[], dict] = dict
    validate: Callable[[Any, Any], None] | None = None
    build_predictor: Callable[..., Any] | None = None
    momentum_decay: Callable[[Any, jax.Array, int], jax.Array] | None = None
    init_extras: Callable[[Any, Any, jax.Array], dict] | None = None
    uses_labels: bool = False
    paper: str = ""

    @property
    def uses_momentum_encoder(self) -> bool:
        """Whether the train state keeps a momentum encoder."""
        return self.momentum_decay is not None


def two_views(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Splits (n, 2, d) embeddings into the (n, d) embeddings of each view."""
    if x.shape[1] != 2:
        raise ValueError(f"this method needs num_views=2, got {x.shape[1]} views; set num_views=2.")
    return x[:, 0], x[:, 1]


def constant_momentum_decay(settings, step, total_steps):
    """MoCo v2: the configured ``momentum_encoder_decay`` at every step."""
    del step, total_steps
    return jnp.asarray(settings.momentum_encoder_decay, jnp.float32)


def cosine_momentum_decay(settings, step, total_steps):
    """MoCo v3 / BYOL: from ``momentum_encoder_decay`` at step 0 to 1 at the end, cosine."""
    base = settings.momentum_encoder_decay
    progress = jnp.minimum(step / max(total_steps, 1), 1.0)
    return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


def check_positive(settings, section: str, *keys: str) -> None:
    """Raises ``MethodSettingError`` unless each ``settings[key]`` is finite and > 0."""
    for key in keys:
        value = settings[key]
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise MethodSettingError(
                f"{section}.{key}", value, "must be a finite number > 0", "use e.g. 0.1"
            )


def check_momentum_decay(settings, section: str) -> None:
    """Raises ``MethodSettingError`` unless ``momentum_encoder_decay`` is in [0, 1)."""
    value = settings.momentum_encoder_decay
    if not (isinstance(value, int | float) and 0 <= value < 1):
        raise MethodSettingError(
            f"{section}.momentum_encoder_decay", value, "must be in [0, 1)", "use e.g. 0.99"
        )


def monitoring_metrics(projections: jax.Array, axis_name: str | None) -> dict[str, jax.Array]:
    """Alignment of the first two views and uniformity of the first view's projections.

    Logged for every method (Wang & Isola 2020), over the global batch.
    """
    projections = jax.lax.stop_gradient(projections)
    return {
        "alignment": losses.alignment(projections[:, 0], projections[:, 1], axis_name=axis_name),
        "uniformity": losses.uniformity(projections[:, 0], axis_name=axis_name),
    }
