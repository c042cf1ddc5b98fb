"""A pure-function view of the NNX models, for jitted and shard_mapped train steps.

NNX modules are mutable Python objects; a jitted train step is best written as a pure
function of pytrees that can be donated, sharded, checkpointed and differentiated. The
model is therefore split once, outside the step, into

* `graphdef`: the static structure (layer types, shapes, dtypes, flags). It is a
  pytree without leaves, so it can be a jit argument or be closed over; equal
  structures hash equally and do not retrace.
* `params`: a nested dict of float32 arrays (trainable: conv/linear kernels and
  biases, BatchNorm scales and biases).
* `batch_stats`: a nested dict of float32 arrays (BatchNorm running mean and var).

Both are plain dicts of `jax.Array` with string keys (no `nnx.State`, no `Variable`
wrappers), so optax, orbax and `jax.tree` treat them like any other pytree. `apply`
merges them back inside the traced function, runs the model in train or eval mode and
returns the updated statistics, Flax-linen style.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from flax import nnx
  >>> from jaxcl import models
  >>> from jaxcl.models import functional
  >>> encoder = models.create("resnet_tiny", rngs=nnx.Rngs(0))
  >>> graphdef, params, batch_stats = functional.split(encoder)
  >>> def loss_fn(params, batch_stats, images):
  ...     features, batch_stats = functional.apply(
  ...         graphdef, params, batch_stats, images, train=True)
  ...     return jnp.mean(features ** 2), batch_stats
  >>> grad_fn = jax.jit(jax.grad(loss_fn, has_aux=True))
  >>> grads, batch_stats = grad_fn(params, batch_stats, jnp.ones((4, 8, 8, 3)))
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

PyTree = Any


def split(module: nnx.Module) -> tuple[nnx.GraphDef, dict, dict]:
    """Splits a model into its static structure, parameters and BatchNorm statistics.

    The jaxcl models hold only `nnx.Param` and `nnx.BatchStat` variables (a ViT's
    frozen patch projection is a `FrozenParam`, a BatchStat subclass, so it travels
    with the untrained state): their layers take `rngs` at construction only and keep
    no RNG state; a ViT's drop-path takes its key as an argument of `apply`. Any
    other variable (for instance the `RngState` of a user module with dropout)
    cannot travel in a params/batch_stats pair without being silently dropped, so
    it is rejected with an error that names it.

    The train/eval flag of BatchNorm is part of `graphdef`, but `apply` overrides it,
    so the same graphdef serves both modes.

    Args:
      module: an NNX module, e.g. from `jaxcl.models.create`.

    Returns:
      `(graphdef, params, batch_stats)`: the static graph definition and two nested
      dicts of arrays (`batch_stats` is `{}` for heads without BatchNorm and for ViTs
      with a trained patch projection).

    Raises:
      ValueError: if the module holds variables other than Param and BatchStat.
    """
    graphdef, params, batch_stats, rest = nnx.split(module, nnx.Param, nnx.BatchStat, ...)
    leftover = jax.tree_util.tree_flatten_with_path(rest)[0]
    if leftover:
        names = ", ".join(jax.tree_util.keystr(path) for path, _ in leftover[:5])
        raise ValueError(
            f"jaxcl.models.functional.split handles Param and BatchStat variables only; "
            f"{type(module).__name__} also holds {names}"
        )
    return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(batch_stats)


def merge(graphdef: nnx.GraphDef, params: PyTree, batch_stats: PyTree) -> nnx.Module:
    """Rebuilds a stateful NNX module from the output of `split` (e.g. after training).

    Args:
      graphdef: the static structure from `split`.
      params: the parameters, as returned by `split` or updated by an optimizer.
      batch_stats: the BatchNorm statistics, as returned by `split` or `apply`.

    Returns:
      A new module holding these arrays, in the mode recorded in `graphdef`.
    """
    return nnx.merge(graphdef, params, batch_stats)


def apply(
    graphdef: nnx.GraphDef,
    params: PyTree,
    batch_stats: PyTree,
    inputs: jax.Array,
    *,
    train: bool,
    rng: jax.Array | None = None,
) -> tuple[jax.Array, PyTree]:
    """Runs a split model as a pure function.

    Safe inside `jax.jit`, `jax.grad` (with respect to `params`) and `jax.shard_map`;
    for global BatchNorm build the model with `bn_axis_name` set to the shard_map axis.
    `train` must be static (a Python bool): the two modes are different programs.

    Args:
      graphdef: the static structure from `split`.
      params: nested dict of parameters.
      batch_stats: nested dict of BatchNorm running statistics.
      inputs: the model input (NHWC images for encoders, features for heads).
      train: True to normalize with the batch statistics and update the running
        averages (momentum 0.9) and to apply a ViT's drop-path; False to normalize
        with the running averages, without drop-path.
      rng: a PRNG key for the model's randomness in training (a ViT's drop-path);
        passed to the model as `rng=` only when given.

    Returns:
      `(outputs, new_batch_stats)`. In train mode `new_batch_stats` holds the updated
      running averages (with gradients stopped: they are state, not a function of the
      loss to optimize); in eval mode it is `batch_stats` unchanged.
    """
    model = nnx.merge(graphdef, params, batch_stats)
    # The mode lives in static attributes; a view sets them without touching graphdef.
    # raise_if_not_found=False: heads without BatchNorm, and ResNets, lack one of them.
    model = nnx.view(
        model, use_running_average=not train, deterministic=not train, raise_if_not_found=False
    )
    outputs = model(inputs) if rng is None else model(inputs, rng=rng)
    if not train:
        return outputs, batch_stats
    new_batch_stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
    return outputs, jax.lax.stop_gradient(new_batch_stats)
