"""Frozen features of a whole split, streamed through the mesh; images are never kept.

Evaluation at ImageNet scale cannot hold a split's images: the train split as
float32 arrays is 1,281,167 x 224 x 224 x 3 x 4 bytes, about 770 GB in every
process. Its features are 1,281,167 x 2048 x 4 bytes, about 10.5 GB. So the
evaluation iterator (padded, masked, each process reading its own part) is
streamed batch by batch through the jitted feature function on the data mesh,
and only the features of the real examples are kept, gathered on every host so
that the probes (``jaxcl.probes``, which place them back on the mesh) see the
same arrays in every process.

Memory: the features, ``N x d x 4`` bytes per process, plus a few batches in
flight; nothing grows with the number of pixels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxcl import distributed

__all__ = ["FeatureFn", "LabelledFeatures", "flatten_pixels", "stream_features"]

# A pure function ``(variables, images) -> features``: variables are passed as an
# argument, never closed over, so one compiled program serves every checkpoint.
FeatureFn = Callable[[Any, jax.Array], jax.Array]


class LabelledFeatures(NamedTuple):
    """Features of the real (unpadded) examples of a split, with their labels.

    Attributes:
      features: (N, d) float32.
      labels: (N,) int32.
    """

    features: np.ndarray
    labels: np.ndarray


def flatten_pixels(variables, images: jax.Array) -> jax.Array:
    """The raw-pixel ``FeatureFn``: each image flattened (``variables`` unused)."""
    del variables
    return images.reshape(images.shape[0], -1)


@functools.lru_cache(maxsize=32)
def _batch_program(apply: FeatureFn, mesh: jax.sharding.Mesh):
    """The jitted ``apply`` of one batch, its outputs gathered onto every device.

    Cached per (function, mesh): a monitor that streams every few hundred
    steps compiles once.
    """
    replicated = NamedSharding(mesh, P())

    def program(variables, images, labels, mask):
        return apply(variables, images).astype(jnp.float32), labels, mask

    # Replicated outputs: every process can read the whole global batch.
    return jax.jit(program, out_shardings=(replicated, replicated, replicated))


def _host(array: jax.Array) -> np.ndarray:
    # A replicated array spans other processes' devices; any local shard is whole.
    return np.asarray(array.addressable_shards[0].data)


def stream_features(
    apply: FeatureFn,
    variables,
    batches: Iterable[dict],
    mesh: jax.sharding.Mesh,
    *,
    image_key: str = "image",
    description: str | None = None,
) -> LabelledFeatures:
    """Runs ``apply`` over every batch on ``mesh`` and keeps the real examples' features.

    Args:
      apply: ``(variables, images) -> (B, d) features``; jitted here, sharded
        over the mesh's ``'data'`` axis.
      variables: its variables (e.g. encoder params and BatchNorm statistics),
        placed on ``mesh``.
      batches: process-local batches with ``image_key`` (B_local, H, W, C),
        ``label`` and ``mask`` (False marks padding), as
        ``jaxcl.data.make_eval_iterator`` yields them; every process must yield
        the same number of batches.
      mesh: the data mesh (all processes).
      image_key: the images' key in each batch.
      description: a progress-bar label (process 0; None: no bar).

    Returns:
      ``LabelledFeatures`` of every process's real examples, in global batch
      order, identical in every process.
    """
    program = _batch_program(apply, mesh)
    keys = (image_key, "label", "mask")
    on_mesh = distributed.prefetch_to_mesh(iter(batches), mesh, keys=keys)
    show = description is not None and jax.process_index() == 0
    features, labels = [], []
    try:
        for batch in tqdm(on_mesh, desc=description, unit="batch", disable=not show):
            out = program(variables, batch[image_key], batch["label"], batch["mask"])
            batch_features, batch_labels, mask = (_host(x) for x in out)
            features.append(batch_features[mask])
            labels.append(batch_labels[mask])
    finally:
        on_mesh.close()
    if not features:
        raise ValueError("stream_features got no batch; is the split empty?")
    return LabelledFeatures(np.concatenate(features), np.concatenate(labels).astype(np.int32))
