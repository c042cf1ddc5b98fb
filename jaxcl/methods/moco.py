"""MoCo v2 (queue of momentum keys) and MoCo v3 (predictor, in-batch keys)."""

import jax
import jax.numpy as jnp

from jaxcl import losses, models
from jaxcl.methods.base import (
    Embeddings,
    Method,
    MethodSettingError,
    check_momentum_decay,
    check_positive,
    constant_momentum_decay,
    cosine_momentum_decay,
    two_views,
)


def init_queue(settings, config, rng):
    """The MoCo v2 queue: ``queue_size`` random unit keys and a write position.

    MoCo starts from random keys too; they are replaced within
    ``queue_size / global_batch_size`` steps.
    """
    keys = jax.random.normal(rng, (settings.queue_size, config.projection_dim), jnp.float32)
    return {"queue": losses.l2_normalize(keys), "queue_position": jnp.zeros((), jnp.int32)}


def enqueue(queue: jax.Array, position: jax.Array, keys: jax.Array):
    """Writes ``keys`` into the ring buffer ``queue`` at ``position``, wrapping around.

    The queue size need not be a multiple of the batch: indices are taken modulo
    the queue size, so a batch that crosses the end continues at the start.

    Args:
      queue: (K, d) keys; K >= number of new keys.
      position: int32 index of the oldest key (the next to overwrite).
      keys: (B, d) new keys.

    Returns:
      ``(new_queue, new_position)``.
    """
    size = queue.shape[0]
    indices = (position + jnp.arange(keys.shape[0])) % size
    return queue.at[indices].set(keys), (position + keys.shape[0]) % size


def gather_replicated(x: jax.Array, axis_name: str) -> jax.Array:
    """All devices' rows of ``x`` in device order, typed as replicated.

    ``all_gather`` gives every device the same values but JAX types its result
    as device-varying; a psum of each device's rows placed in a zero buffer
    gives the same array typed as replicated, which a queue kept in the
    replicated train state must be.
    """
    num_devices = jax.lax.axis_size(axis_name)
    placed = jnp.zeros((num_devices, *x.shape), x.dtype)
    placed = placed.at[jax.lax.axis_index(axis_name)].set(x)
    return jax.lax.psum(placed, axis_name).reshape((-1, *x.shape[1:]))


def mocov2_loss(embeddings: Embeddings, labels, extras, settings, axis_name, step):
    """Symmetrised MoCo v2 InfoNCE against the queue, then enqueue the global keys.

    Each view's query is scored against the other view's momentum key and the
    queue (the symmetric form of solo-learn's "MoCo v2+", which uses both views
    per step; the paper's asymmetric loss is one of the two terms). The new keys
    of the second view are gathered from every device before enqueueing, as in
    MoCo, so every device holds the same queue.
    """
    q1, q2 = two_views(embeddings.projections)
    k1, k2 = two_views(jax.lax.stop_gradient(embeddings.momentum_projections))
    queue = jax.lax.stop_gradient(extras["queue"])
    loss = 0.5 * (
        losses.info_nce(q1, k2, queue, temperature=settings.temperature, axis_name=axis_name)
        + losses.info_nce(q2, k1, queue, temperature=settings.temperature, axis_name=axis_name)
    )
    new_keys = losses.l2_normalize(k2)
    if axis_name is not None:
        new_keys = gather_replicated(new_keys, axis_name)
    new_queue, new_position = enqueue(extras["queue"], extras["queue_position"], new_keys)
    return loss, {"queue": new_queue, "queue_position": new_position}, {}


def mocov3_loss(embeddings: Embeddings, labels, extras, settings, axis_name, step):
    """MoCo v3: symmetric InfoNCE of predictions against in-batch momentum keys.

    ``ctr(q1, k2) + ctr(q2, k1)`` with keys of the whole global batch as
    candidates, scaled by ``2 T`` as in the paper's pseudocode (which keeps the
    gradient scale independent of the temperature).
    """
    q1, q2 = two_views(embeddings.predictions)
    k1, k2 = two_views(jax.lax.stop_gradient(embeddings.momentum_projections))
    temperature = settings.temperature
    loss = (
        losses.info_nce(q1, k2, temperature=temperature, axis_name=axis_name)
        + losses.info_nce(q2, k1, temperature=temperature, axis_name=axis_name)
    ) * (2 * temperature)
    return loss, extras, {}


def _validate_mocov2(settings, config):
    check_positive(settings, "mocov2", "temperature")
    check_momentum_decay(settings, "mocov2")
    if not isinstance(settings.queue_size, int) or settings.queue_size < config.global_batch_size:
        raise MethodSettingError(
            "mocov2.queue_size",
            settings.queue_size,
            f"is smaller than global_batch_size={config.global_batch_size}",
            "use a queue at least as large as the batch",
        )


def _validate_mocov3(settings, config):
    check_positive(settings, "mocov3", "temperature", "predictor_hidden_dim")
    check_momentum_decay(settings, "mocov3")


def mocov3_predictor(settings, in_features, *, bn_axis_name, dtype, rngs):
    """MoCo v3's 2-layer predictor on the projections, as wide as its input at the output."""
    return models.create(
        "mocov3_predictor",
        in_features=in_features,
        hidden_features=settings.predictor_hidden_dim,
        out_features=in_features,
        bn_axis_name=bn_axis_name,
        dtype=dtype,
        rngs=rngs,
    )


MOCOV2 = Method(
    name="mocov2",
    loss=mocov2_loss,
    # A CPU-sized queue; the ImageNet recipe sets 65536 and decay 0.999.
    defaults=lambda: {"temperature": 0.2, "queue_size": 4096, "momentum_encoder_decay": 0.99},
    validate=_validate_mocov2,
    momentum_decay=constant_momentum_decay,
    init_extras=init_queue,
    paper="He et al. 2020, arXiv:1911.05722; Chen et al. 2020, arXiv:2003.04297",
)

MOCOV3 = Method(
    name="mocov3",
    loss=mocov3_loss,
    defaults=lambda: {
        "temperature": 1.0,
        "momentum_encoder_decay": 0.99,
        "predictor_hidden_dim": 4096,
    },
    validate=_validate_mocov3,
    build_predictor=mocov3_predictor,
    momentum_decay=cosine_momentum_decay,
    paper="Chen, Xie, He 2021, arXiv:2104.02057",
)
