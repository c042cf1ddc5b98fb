"""Contrastive methods: what each one computes from the embeddings of a batch.

A method is small: the training loop (``jaxcl.train``) runs the networks and the
optimizer for every method alike, and a method only says which parts it needs
(predictor, momentum encoder, queue, labels) and how its loss is computed from
the embeddings of the views. Each loss is written per device with an
``axis_name``, so the same code is the single-device loss and the global-batch
loss inside ``jax.shard_map``.
"""

from jaxcl.methods.base import Embeddings, Method
from jaxcl.methods.registry import METHOD_NAMES, get_method

__all__ = ["METHOD_NAMES", "Embeddings", "Method", "get_method"]
