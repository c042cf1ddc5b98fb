"""One small optax training loop for the toy models of `jaxcl.theory`.

The whole run is a single jitted ``lax.scan``: on a 2-core CPU the toy models
are so small that per-step Python dispatch would dominate, and a scan compiles
once per (loss, shapes) and then runs at XLA speed. Loss functions are plain
module-level functions of ``(params, batch, key, hyper)``; hyper-parameters
travel in ``hyper`` as traced values, so a sweep over temperatures or label
fractions reuses one compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = ["TrainResult", "train"]

LossFn = Callable[[Any, Any, jax.Array, Any], jax.Array]


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What `train` returns.

    Attributes:
      params: the final parameters.
      losses: (steps,) loss of every step.
      snapshots: the parameters after each of ``num_snapshots`` equal chunks of
        steps, stacked on a leading axis (the last one equals ``params``).
    """

    params: Any
    losses: jax.Array
    snapshots: Any


@functools.cache
def _compiled_run(
    loss_fn: LossFn,
    steps_per_snapshot: int,
    num_snapshots: int,
    batch_size: int | None,
    learning_rate: float,
    weight_decay: float,
):
    # Cosine decay to zero: the masks are redrawn every step, so a constant
    # rate would leave the final iterate jittering around the minimiser of the
    # augmentation-averaged loss instead of converging to it.
    schedule = optax.cosine_decay_schedule(learning_rate, steps_per_snapshot * num_snapshots)
    if weight_decay:
        optimizer = optax.adamw(schedule, weight_decay=weight_decay)
    else:
        optimizer = optax.adam(schedule)

    def one_step(carry, step_key, data, hyper):
        params, opt_state = carry
        batch_key, loss_key = jax.random.split(step_key)
        if batch_size is None:
            batch = data
        else:
            num_rows = jax.tree.leaves(data)[0].shape[0]
            # With replacement: sampling without replacement sorts all n rows
            # every step, which dominated the run time of these tiny models.
            rows = jax.random.randint(batch_key, (batch_size,), 0, num_rows)
            batch = jax.tree.map(lambda leaf: leaf[rows], data)
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, loss_key, hyper)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def chunk(carry, chunk_key, data, hyper):
        keys = jax.random.split(chunk_key, steps_per_snapshot)
        carry, losses = jax.lax.scan(
            functools.partial(one_step, data=data, hyper=hyper), carry, keys
        )
        return carry, (carry[0], losses)

    @jax.jit
    def run(params, data, key, hyper):
        keys = jax.random.split(key, num_snapshots)
        (params, _), (snapshots, losses) = jax.lax.scan(
            functools.partial(chunk, data=data, hyper=hyper),
            (params, optimizer.init(params)),
            keys,
        )
        return params, losses.reshape(-1), snapshots

    return run


def train(
    loss_fn: LossFn,
    params,
    data,
    *,
    key: jax.Array,
    steps: int,
    learning_rate: float,
    batch_size: int | None = None,
    hyper=None,
    num_snapshots: int = 1,
    weight_decay: float = 0.0,
) -> TrainResult:
    """Minimises ``loss_fn`` with Adam (AdamW if ``weight_decay``) in one jitted scan.

    The learning rate follows a cosine decay from ``learning_rate`` to 0.

    Args:
      loss_fn: ``loss_fn(params, batch, key, hyper) -> scalar``; ``key`` is a
        fresh PRNG key every step (for augmentations), ``batch`` a pytree of
        rows of ``data``. Use a module-level function: the compiled program is
        cached on its identity.
      params: initial parameters (a pytree of arrays).
      data: a pytree of arrays sharing their leading (example) axis.
      key: PRNG key of the run.
      steps: number of optimisation steps; must be a multiple of ``num_snapshots``.
      learning_rate: Adam's initial learning rate.
      batch_size: rows drawn uniformly (with replacement) each step; ``None`` for
        full batch.
      hyper: pytree of traced hyper-parameters passed to ``loss_fn``.
      num_snapshots: how many evenly spaced copies of the parameters to keep.
      weight_decay: decoupled weight decay (AdamW); 0 for plain Adam.

    Returns:
      A `TrainResult` with the final parameters, the per-step losses and the
      snapshots.
    """
    if steps % num_snapshots:
        raise ValueError(
            f"steps={steps} is not a multiple of num_snapshots={num_snapshots}; "
            "pick steps divisible by the number of snapshots."
        )
    num_rows = jax.tree.leaves(data)[0].shape[0]
    if batch_size is not None and batch_size >= num_rows:
        batch_size = None
    run = _compiled_run(
        loss_fn,
        steps // num_snapshots,
        num_snapshots,
        batch_size,
        float(learning_rate),
        float(weight_decay),
    )
    hyper = jax.tree.map(jnp.asarray, hyper) if hyper is not None else {}
    params, losses, snapshots = run(params, data, key, hyper)
    return TrainResult(params=params, losses=losses, snapshots=snapshots)
