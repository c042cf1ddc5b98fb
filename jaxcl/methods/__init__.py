"""Contrastive methods: what each one computes from the embeddings of a batch.

A method is small: the trainer (``jaxcl.train``) runs the networks and the
optimizer for every method alike, and a method only declares which parts it
needs (predictor, momentum encoder and its decay, queue, labels), its own config
section and how its loss is computed from the embeddings of the views (see
``jaxcl.methods.base.Method``). Each loss is written per device with an
``axis_name``, so the same code is the single-device loss and the global-batch
loss inside ``jax.shard_map``.
"""

from jaxcl.methods.base import Embeddings, Method, MethodSettingError
from jaxcl.methods.registry import METHOD_NAMES, get_method

__all__ = ["METHOD_NAMES", "Embeddings", "Method", "MethodSettingError", "get_method"]
