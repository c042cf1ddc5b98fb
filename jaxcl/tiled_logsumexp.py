"""Row-wise log-sum-exp of a product of two matrices, in tiles: memory linear in the rows.

``masked_logsumexp(anchors, candidates, excluded_column, block_size)`` returns,
for each row ``a`` of ``anchors``, ``log sum_{k != excluded[a]} exp(anchors[a] .
candidates[k])`` without ever building the (rows x columns) matrix of logits:

* Forward: for each tile of (anchors x candidates), with both sides split in
  blocks of ``block_size`` rows, the logits are formed, masked (the excluded
  column of each row and the padding get ``-inf``) and folded into a running
  per-row log-sum-exp (the running maximum is carried, so no ``exp`` ever sees a
  positive argument). Only the per-row log-sum-exp leaves the loop.
* Backward (``jax.custom_vjp``): the tiles are recomputed from the anchors,
  the candidates and the saved log-sum-exp; the softmax of a tile weights the
  candidates (gradient of the anchors) and the anchors (gradient of the
  candidates). Nothing of size (rows, columns) is ever stored.

Peak memory therefore grows with ``block_size**2`` plus the two inputs, and the
work is one extra (recomputed) matrix product per tile over a dense
``logsumexp``: four products of the size of the logits instead of three.

This module is a kernel: it imports nothing of jaxcl, knows nothing of views,
positives or devices, and works on whatever arrays it is given (inside
``jax.shard_map`` too). ``jaxcl.losses.nt_xent_blockwise`` builds NT-Xent on it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["DEFAULT_BLOCK_SIZE", "masked_logsumexp"]

#: Rows (and columns) of one tile of logits: 4096^2 float32 is 64 MiB.
DEFAULT_BLOCK_SIZE = 4096


def _contract(a: jax.Array, b: jax.Array, a_axis: int, b_axis: int) -> jax.Array:
    """``a`` times ``b`` summed over ``a_axis`` and ``b_axis``, in true float32.

    HIGHEST keeps the products in float32 on TPU/GPU, where the default matmul
    precision would round the operands to bfloat16.
    """
    return jax.lax.dot_general(
        a, b, (((a_axis,), (b_axis,)), ((), ())), precision=jax.lax.Precision.HIGHEST
    )


def _initial_carry(shape, like: tuple[jax.Array, ...], fill: float = 0.0) -> jax.Array:
    """A float32 constant typed as varying over the mesh axes of any of ``like``.

    Inside ``jax.shard_map`` a scan carry must keep its type, and a value
    computed from per-device data varies over the mesh axis while a fresh
    constant does not. ``lax.full_like`` gives its result the varying axes of
    its argument, and a sum of such scalars has the union of theirs.
    """
    reference = sum(jax.lax.full_like(x, 0, jnp.float32, shape=()) for x in like)
    return jax.lax.full_like(reference, fill, jnp.float32, shape=shape)


def _pad_rows(x: jax.Array, rows: int, value=0) -> jax.Array:
    padding = [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
    return jnp.pad(x, padding, constant_values=value)


def _num_blocks(rows: int, block_size: int) -> int:
    return -(-rows // block_size)


def _tile_logits(anchor_block, excluded_block, candidate_block, first_column, num_candidates):
    """Logits of one tile with the excluded and the padding columns at ``-inf``."""
    logits = _contract(anchor_block, candidate_block, 1, 1)
    columns = first_column + jnp.arange(candidate_block.shape[0])
    masked = (columns[None, :] == excluded_block[:, None]) | (columns >= num_candidates)[None, :]
    return jnp.where(masked, -jnp.inf, logits)


def _blocked(anchors, excluded_column, candidates, block_size):
    """Pads and reshapes both sides into blocks of ``block_size`` rows."""
    num_anchors, dim = anchors.shape
    num_candidates = candidates.shape[0]
    anchor_blocks = _num_blocks(num_anchors, block_size)
    candidate_blocks = _num_blocks(num_candidates, block_size)
    anchors = _pad_rows(anchors, anchor_blocks * block_size).reshape(anchor_blocks, block_size, dim)
    # Padded anchor rows exclude no column; their results are sliced off.
    excluded_column = _pad_rows(excluded_column, anchor_blocks * block_size, -1).reshape(
        anchor_blocks, block_size
    )
    candidates = _pad_rows(candidates, candidate_blocks * block_size).reshape(
        candidate_blocks, block_size, dim
    )
    return anchors, excluded_column, candidates


def _forward_rows(anchor_block, excluded_block, candidates, num_candidates):
    """Per-row log-sum-exp of one block of anchors over every block of candidates."""
    block_size = candidates.shape[1]

    def fold(carry, inputs):
        running_max, running_sum = carry
        index, candidate_block = inputs
        logits = _tile_logits(
            anchor_block, excluded_block, candidate_block, index * block_size, num_candidates
        )
        new_max = jnp.maximum(running_max, jnp.max(logits, axis=1))
        # A row whose columns so far are all masked has max -inf; shift by 0 then
        # (its sum is still 0) so that -inf - -inf never makes a NaN.
        shift = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
        running_sum = running_sum * jnp.exp(running_max - shift) + jnp.sum(
            jnp.exp(logits - shift[:, None]), axis=1
        )
        return (new_max, running_sum), None

    rows = anchor_block.shape[0]
    like = (anchor_block, excluded_block, candidates)
    initial = (_initial_carry((rows,), like, -jnp.inf), _initial_carry((rows,), like))
    steps = (jnp.arange(candidates.shape[0]), candidates)
    (running_max, running_sum), _ = jax.lax.scan(fold, initial, steps)
    shift = jnp.where(jnp.isfinite(running_max), running_max, 0.0)
    return shift + jnp.log(running_sum)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def masked_logsumexp(
    anchors: jax.Array, candidates: jax.Array, excluded_column: jax.Array, block_size: int
) -> jax.Array:
    """Row-wise log-sum-exp of ``anchors @ candidates.T`` without one column per row.

    The (rows, columns) matrix is never built: it is computed in tiles of
    ``block_size`` x ``block_size``, and the gradient recomputes the tiles.

    Args:
      anchors: (m, d) float32 rows (already divided by the temperature).
      candidates: (c, d) float32 columns.
      excluded_column: (m,) int column left out of each row's sum (-1 for none).
      block_size: rows and columns of one tile (static).

    Returns:
      (m,) float32: ``log sum_{k != excluded[a]} exp(anchors[a] . candidates[k])``,
      ``-inf`` for a row with no column left.
    """
    return _masked_logsumexp_forward(anchors, candidates, excluded_column, block_size)[0]


def _masked_logsumexp_forward(anchors, candidates, excluded_column, block_size):
    num_anchors = anchors.shape[0]
    num_candidates = candidates.shape[0]
    blocked_anchors, blocked_excluded, blocked_candidates = _blocked(
        anchors, excluded_column, candidates, block_size
    )
    log_sum = jax.lax.map(
        lambda block: _forward_rows(block[0], block[1], blocked_candidates, num_candidates),
        (blocked_anchors, blocked_excluded),
    ).reshape(-1)[:num_anchors]
    return log_sum, (anchors, candidates, excluded_column, log_sum)


def _masked_logsumexp_backward(block_size, residuals, log_sum_cotangent):
    anchors, candidates, excluded_column, log_sum = residuals
    like = (*residuals, log_sum_cotangent)
    num_anchors, num_candidates = anchors.shape[0], candidates.shape[0]
    blocked_anchors, blocked_excluded, blocked_candidates = _blocked(
        anchors, excluded_column, candidates, block_size
    )
    padded_rows = blocked_anchors.shape[0] * block_size
    # Padded rows get a zero cotangent and a finite log-sum so they add nothing.
    blocked_cotangent = _pad_rows(log_sum_cotangent, padded_rows).reshape(-1, block_size)
    blocked_log_sum = _pad_rows(jnp.where(jnp.isfinite(log_sum), log_sum, 0.0), padded_rows)
    blocked_log_sum = blocked_log_sum.reshape(-1, block_size)

    def row_block(candidate_gradient, inputs):
        anchor_block, excluded_block, cotangent, row_log_sum = inputs

        def column_block(anchor_gradient, column_inputs):
            index, candidate_block = column_inputs
            logits = _tile_logits(
                anchor_block, excluded_block, candidate_block, index * block_size, num_candidates
            )
            # d lse_a / d logit_ak is the softmax p_ak; masked columns give exp(-inf) = 0.
            weights = cotangent[:, None] * jnp.exp(logits - row_log_sum[:, None])
            anchor_gradient = anchor_gradient + _contract(weights, candidate_block, 1, 0)
            return anchor_gradient, _contract(weights, anchor_block, 0, 0)

        anchor_gradient, candidate_gradient_blocks = jax.lax.scan(
            column_block,
            _initial_carry(anchor_block.shape, like),
            (jnp.arange(blocked_candidates.shape[0]), blocked_candidates),
        )
        candidate_gradient = candidate_gradient + candidate_gradient_blocks
        return candidate_gradient, anchor_gradient

    candidate_gradient, anchor_gradient = jax.lax.scan(
        row_block,
        _initial_carry(blocked_candidates.shape, like),
        (blocked_anchors, blocked_excluded, blocked_cotangent, blocked_log_sum),
    )
    anchor_gradient = anchor_gradient.reshape(-1, anchors.shape[1])[:num_anchors]
    candidate_gradient = candidate_gradient.reshape(-1, candidates.shape[1])[:num_candidates]
    return anchor_gradient, candidate_gradient, None


masked_logsumexp.defvjp(_masked_logsumexp_forward, _masked_logsumexp_backward)
