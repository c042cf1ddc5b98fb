"""Contrastive losses as pure functions, with negatives gathered across devices.

Every loss takes un-normalised embeddings and L2-normalises them itself, works in
float32 whatever the input dtype, and takes an ``axis_name`` keyword:

* ``axis_name=None`` (the default) is the single-device loss on the arrays given:
  this is the notebook API and needs no mesh.
* ``axis_name='data'`` (any mesh axis name), called inside ``jax.shard_map``,
  treats the per-device arrays as shards of one global batch: each device scores
  its local anchors against candidates gathered from every device with
  ``jax.lax.all_gather`` and the returned value is the loss of the global batch.
  Value and gradients equal the single-device call on the concatenated batch;
  ``tests/test_losses.py`` checks this on eight devices.

The gather is ``jax.lax.all_gather(..., tiled=True)``, which JAX differentiates
itself (its transpose is a reduce-scatter), so gradients flow back to the device
that produced each candidate: the usual bug of re-implementations that gather
without gradient (SimCLR issue tracker, lightly's NTXentLoss) cannot happen here.

Masking uses ``-inf`` and ``logsumexp``; no ``exp`` is ever taken without
max-subtraction, so every finite input gives a finite loss.

At large batch ``nt_xent`` goes blockwise by itself (``nt_xent_blockwise``): the
same loss with memory linear in the batch, built on the tiled log-sum-exp of
``jaxcl.tiled_logsumexp``. Both share one NT-Xent set-up (``_two_views``), so
the dense and the blockwise loss cannot disagree on anchors, positives or the
excluded self column.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.tiled_logsumexp import DEFAULT_BLOCK_SIZE, masked_logsumexp

__all__ = [
    "alignment",
    "alpha_cl",
    "info_nce",
    "l2_normalize",
    "nt_xent",
    "nt_xent_blockwise",
    "quadratic",
    "sup_con",
    "uniformity",
]

ALPHA_TYPES = ("exp", "inverse", "constant")

#: How ``sup_con`` treats anchors that have no positive (see its docstring).
ANCHORS_WITHOUT_POSITIVES = ("exclude", "zero")

#: ``nt_xent`` with ``block_size=None`` goes blockwise when one device's dense
#: logits (2n x 2N float32) would take at least this many bytes.
DENSE_LOGITS_LIMIT_BYTES = 256 * 2**20


def l2_normalize(x: jax.Array, *, axis: int = -1, epsilon: float = 1e-12) -> jax.Array:
    """Returns ``x / ||x||`` along ``axis`` in float32.

    Zero vectors stay zero instead of becoming NaN: the norm is clipped at
    ``epsilon`` before dividing. Value and gradient are finite for every finite
    input, however large or small.

    Args:
      x: array of any floating dtype.
      axis: the feature axis.
      epsilon: smallest norm that is divided by.

    Returns:
      A float32 array of the shape of ``x`` with unit rows.
    """
    x = jnp.asarray(x, jnp.float32)
    # x**2 overflows for |x| > 1.8e19 (NaN values and gradients) and vanishes
    # for tiny x, and the gradient's intermediates do so much sooner. So each row
    # is first scaled by a power of two that brings its largest entry to [0.5, 1).
    # Powers of two are exact: the result is unchanged bit for bit where nothing
    # overflowed, and as it does not depend on the scale, no gradient flows there.
    magnitude = jax.lax.stop_gradient(jnp.max(jnp.abs(x), axis=axis, keepdims=True))
    _, exponent = jnp.frexp(magnitude)
    # In two factors: 2**-exponent alone is subnormal (flushed to zero) for the
    # largest floats.
    half = exponent // 2
    low, high = _power_of_two(-half), _power_of_two(half - exponent)
    x = x * low * high
    squared_norm = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(squared_norm, jnp.square(epsilon * low * high)))


def _power_of_two(exponent: jax.Array) -> jax.Array:
    """Exactly ``2.0**exponent`` in float32, for integer exponents in [-126, 127]."""
    return jax.lax.bitcast_convert_type((exponent.astype(jnp.int32) + 127) << 23, jnp.float32)


def _similarity(anchors: jax.Array, candidates: jax.Array) -> jax.Array:
    # HIGHEST keeps the logits in true float32 on TPU/GPU, where the default
    # matmul precision would round the operands to bfloat16.
    return jnp.matmul(anchors, candidates.T, precision=jax.lax.Precision.HIGHEST)


def _gather(x: jax.Array, axis_name: str | None) -> jax.Array:
    """The global batch: ``x`` itself, or the shards of all devices in order."""
    if axis_name is None:
        return x
    return jax.lax.all_gather(x, axis_name, axis=0, tiled=True)


def _first_global_row(local_rows: int, axis_name: str | None) -> jax.Array | int:
    """Index in the global batch of this device's first local row."""
    if axis_name is None:
        return 0
    return jax.lax.axis_index(axis_name) * local_rows


def _global_mean(local_mean: jax.Array, axis_name: str | None) -> jax.Array:
    # Every device holds the same number of anchors, so the mean of the
    # per-device means is the mean over the global batch.
    if axis_name is None:
        return local_mean
    return jax.lax.pmean(local_mean, axis_name)


def _check_positive(name: str, value) -> None:
    """Raises unless ``value`` is finite and > 0, when it is known (not traced).

    Python and NumPy scalars and concrete arrays are checked alike; a traced
    value (a temperature learnt or scheduled under jit) cannot be.
    """
    if isinstance(value, jax.core.Tracer):
        return
    values = np.asarray(value)
    if not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
        raise ValueError(f"{name} must be a real number, got {value!r}; pass a positive {name}.")
    if values.size and not (np.all(np.isfinite(values)) and np.all(values > 0)):
        raise ValueError(f"{name} must be > 0 and finite, got {value}; pass a positive {name}.")


def _check_embeddings(name: str, z, ndim: int = 2) -> None:
    if jnp.ndim(z) != ndim:
        raise ValueError(
            f"{name} must have {ndim} dimensions, got shape {jnp.shape(z)}; "
            f"pass embeddings shaped {'(batch, dim)' if ndim == 2 else '(batch, views, dim)'}."
        )
    if not jnp.issubdtype(jnp.result_type(z), jnp.floating):
        raise ValueError(
            f"{name} must be a floating array, got dtype {jnp.result_type(z)}; "
            "cast the embeddings to float32 or bfloat16."
        )
    if jnp.shape(z)[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {jnp.shape(z)}); pass at least one row.")


def _check_pair(z1, z2) -> None:
    _check_embeddings("z1", z1)
    _check_embeddings("z2", z2)
    if jnp.shape(z1) != jnp.shape(z2):
        raise ValueError(
            f"z1 and z2 must have the same shape, got {jnp.shape(z1)} and {jnp.shape(z2)}; "
            "row i of each must be a view of the same example."
        )


class _TwoViews(NamedTuple):
    """The NT-Xent set-up of one device: who is anchor, candidate and positive.

    Attributes:
      anchors: (2n, d) unit rows ``[z1_local; z2_local]``.
      partners: (2n, d) the positive of each anchor, ``[z2_local; z1_local]``.
      candidates: (2N, d) unit rows ``[z1_global; z2_global]`` (gathered).
      self_column: (2n,) column of each anchor itself among the candidates.
      positive_column: (2n,) column of each anchor's positive (its partner).
    """

    anchors: jax.Array
    partners: jax.Array
    candidates: jax.Array
    self_column: jax.Array
    positive_column: jax.Array


def _two_views(z1, z2, axis_name) -> _TwoViews:
    """Checks, L2-normalises and lays out two views for every two-view loss.

    Local row i on device r is global example i + r n; its views are candidate
    columns i + r n (first view) and N + i + r n (second view).
    """
    _check_pair(z1, z2)
    z1 = l2_normalize(z1)
    z2 = l2_normalize(z2)
    local_rows = z1.shape[0]
    global_z1 = _gather(z1, axis_name)
    global_z2 = _gather(z2, axis_name)
    global_rows = global_z1.shape[0]
    rows = _first_global_row(local_rows, axis_name) + jnp.arange(local_rows)
    return _TwoViews(
        anchors=jnp.concatenate([z1, z2], axis=0),
        partners=jnp.concatenate([z2, z1], axis=0),
        candidates=jnp.concatenate([global_z1, global_z2], axis=0),
        self_column=jnp.concatenate([rows, rows + global_rows]),
        positive_column=jnp.concatenate([rows + global_rows, rows]),
    )


def _column_mask(columns: jax.Array, num_columns: int) -> jax.Array:
    return columns[:, None] == jnp.arange(num_columns)[None, :]


def nt_xent(
    z1: jax.Array,
    z2: jax.Array,
    *,
    temperature: float = 0.1,
    axis_name: str | None = None,
    block_size: int | None = None,
) -> jax.Array:
    r"""SimCLR's normalised temperature-scaled cross-entropy (NT-Xent).

    ``z1[i]`` and ``z2[i]`` are two views of example i. Every one of the 2N
    views is an anchor; its positive is the other view of its example and its
    negatives are the other 2N - 2 views of the global batch:

    .. math::
        \ell_a = -\log \frac{\exp(s_{a,p(a)}/T)}{\sum_{k \ne a} \exp(s_{a,k}/T)},
        \qquad L = \frac{1}{2N} \sum_a \ell_a,

    with ``s`` the cosine similarity. Relation to other conventions:

    * the official SimCLR code returns the sum of the two directional means,
      which is ``2 * nt_xent``;
    * MoCo v3's symmetric in-batch loss is ``ctr(q1, k2) + ctr(q2, k1)`` scaled
      by ``2 T``; its candidates are only the other view's keys (no same-view
      negatives), so it is not a rescaling of this loss (see ``info_nce``);
    * ``optax.losses.ntxent(concat([z1, z2]), concat([arange(N)] * 2))`` has the
      same convention and value.

    Args:
      z1: (n, d) embeddings of the first views (local shard if ``axis_name``).
      z2: (n, d) embeddings of the second views.
      temperature: the softmax temperature T > 0 (SimCLR: 0.1 ImageNet, 0.5 CIFAR).
      axis_name: mesh axis to gather negatives over, inside ``jax.shard_map``.
      block_size: ``None`` (default) picks the implementation from the size of
        one device's logits (2n x 2N float32): dense below 256 MiB (on one device,
        a global batch below 4096), else ``nt_xent_blockwise`` with tiles of
        4096, whose memory is linear in the batch. ``0`` forces
        the dense matrix; a positive int forces blockwise with that tile side.
        Both give the same value and gradients to float32 round-off.

    Returns:
      The scalar mean loss over all 2N anchors of the global batch (float32).

    Examples:
      >>> import jax
      >>> z1, z2 = jax.random.normal(jax.random.key(0), (2, 8, 16))
      >>> float(nt_xent(z1, z1, temperature=0.1)) < float(nt_xent(z1, z2, temperature=0.1))
      True

    References:
      Chen et al., "A Simple Framework for Contrastive Learning of Visual
      Representations", ICML 2020, https://arxiv.org/abs/2002.05709
    """
    _check_positive("temperature", temperature)
    if block_size is None:
        _check_pair(z1, z2)
        local_views = 2 * jnp.shape(z1)[0]
        global_views = local_views * (1 if axis_name is None else jax.lax.axis_size(axis_name))
        if 4 * local_views * global_views >= DENSE_LOGITS_LIMIT_BYTES:
            block_size = DEFAULT_BLOCK_SIZE
    if block_size:
        return nt_xent_blockwise(
            z1, z2, temperature=temperature, axis_name=axis_name, block_size=block_size
        )
    views = _two_views(z1, z2, axis_name)
    logits = _similarity(views.anchors, views.candidates) / temperature
    is_self = _column_mask(views.self_column, logits.shape[1])
    log_normaliser = jax.nn.logsumexp(jnp.where(is_self, -jnp.inf, logits), axis=1)
    positive_logit = jnp.take_along_axis(logits, views.positive_column[:, None], axis=1)[:, 0]
    return _global_mean(jnp.mean(log_normaliser - positive_logit), axis_name)


def nt_xent_blockwise(
    z1: jax.Array,
    z2: jax.Array,
    *,
    temperature: float = 0.1,
    axis_name: str | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> jax.Array:
    """NT-Xent with memory linear in the batch: ``nt_xent`` in tiles.

    Same arguments, value and gradients as ``nt_xent`` (to float32 round-off),
    including inside ``jax.shard_map`` with ``axis_name``: both start from the
    same set-up of anchors, candidates and self columns. The dense (2n, 2N)
    logits are never built: ``jaxcl.tiled_logsumexp.masked_logsumexp`` computes
    each anchor's log-normaliser in tiles of ``block_size`` anchors x
    ``block_size`` candidates with an online log-sum-exp, and recomputes the
    tiles in the backward pass. The scratch memory is a few ``block_size**2``
    float32 tiles plus about ten copies of the (2N, d) embeddings (XLA reports
    0.3 GB at 65,536 views of dimension 128 with tiles of 4096, where the dense
    logits alone take 16 GiB). The price is one more matrix product per tile in
    the backward pass: four products the size of the logits instead of three.

    The positive logit is a dot product with the other view of the same
    example, which lives on the same device; it and the gather of candidates
    over ``axis_name`` stay outside the custom VJP, so JAX differentiates both
    itself (the transpose of ``all_gather(tiled=True)`` is a reduce-scatter
    that returns each device the gradient of the candidates it contributed).

    ``nt_xent`` switches to this function by itself when the dense logits would
    exceed 256 MiB (see its ``block_size`` argument).

    Args:
      z1: (n, d) embeddings of the first views (local shard if ``axis_name``).
      z2: (n, d) embeddings of the second views.
      temperature: the softmax temperature T > 0.
      axis_name: mesh axis to gather negatives over, inside ``jax.shard_map``.
      block_size: rows and columns of one tile of logits (static); need not
        divide the batch: the last block is padded and its columns masked.

    Returns:
      The scalar mean loss over all 2N anchors of the global batch (float32).

    Examples:
      >>> import jax
      >>> z1, z2 = jax.random.normal(jax.random.key(0), (2, 50, 16))
      >>> dense = nt_xent(z1, z2, block_size=0)
      >>> blocked = nt_xent_blockwise(z1, z2, block_size=8)
      >>> bool(abs(dense - blocked) < 1e-5)
      True

    References:
      Chen et al., SimCLR, ICML 2020, https://arxiv.org/abs/2002.05709; the
      online log-sum-exp with recomputation in the backward pass is that of
      Milakov & Gimelshein 2018 (https://arxiv.org/abs/1805.02867) and
      FlashAttention (Dao et al. 2022, https://arxiv.org/abs/2205.14135).
    """
    _check_positive("temperature", temperature)
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}.")
    views = _two_views(z1, z2, axis_name)
    # Dividing the anchors rather than the logits by T leaves one matrix product.
    scaled_anchors = views.anchors / temperature
    block_size = min(block_size, max(views.anchors.shape[0], views.candidates.shape[0]))
    log_normaliser = masked_logsumexp(
        scaled_anchors, views.candidates, views.self_column, block_size
    )
    positive_logit = jnp.sum(scaled_anchors * views.partners, axis=1)
    return _global_mean(jnp.mean(log_normaliser - positive_logit), axis_name)


def info_nce(
    q: jax.Array,
    k: jax.Array,
    queue: jax.Array | None = None,
    *,
    temperature: float = 0.2,
    axis_name: str | None = None,
) -> jax.Array:
    r"""MoCo's InfoNCE: each query against its key and a set of negatives.

    With a ``queue`` (MoCo v1/v2) the positive of ``q[i]`` is ``k[i]`` and the
    negatives are the K rows of the queue; the logits are ``[q_i.k_i, q_i.Q^T]``
    and the loss is the cross-entropy with label 0. Without a queue (MoCo v3),
    the candidates are the keys of the whole global batch gathered across
    devices and the positive of local row i on device r is global key i + r n.

    Keys come from the momentum encoder and carry no gradient in MoCo; this
    function does not stop their gradient itself so that it stays a plain loss
    (the methods in ``jaxcl.methods`` apply ``jax.lax.stop_gradient``). MoCo v3
    scales its symmetric loss by ``2 T``; that scaling also lives in the method.

    Args:
      q: (n, d) queries (local shard if ``axis_name``).
      k: (n, d) keys; ``k[i]`` is the positive of ``q[i]``.
      queue: optional (K, d) negative keys. ``None`` uses in-batch negatives.
      temperature: the softmax temperature T > 0 (MoCo v1 0.07, v2 0.2, v3 1.0).
      axis_name: mesh axis of the data-parallel batch inside ``jax.shard_map``:
        averages over the global batch and, without a queue, gathers keys.

    Returns:
      The scalar mean loss over the queries of the global batch (float32).

    Examples:
      >>> import jax
      >>> q, k, queue = jax.random.normal(jax.random.key(0), (3, 4, 8))
      >>> info_nce(q, k, queue, temperature=0.2).shape
      ()

    References:
      He et al., "Momentum Contrast for Unsupervised Visual Representation
      Learning", CVPR 2020, https://arxiv.org/abs/1911.05722;
      Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision
      Transformers" (MoCo v3), ICCV 2021, https://arxiv.org/abs/2104.02057
    """
    _check_positive("temperature", temperature)
    _check_embeddings("q", q)
    _check_embeddings("k", k)
    if jnp.shape(q) != jnp.shape(k):
        raise ValueError(
            f"q and k must have the same shape, got {jnp.shape(q)} and {jnp.shape(k)}; "
            "k[i] must be the key of query q[i]."
        )
    q = l2_normalize(q)
    k = l2_normalize(k)
    if queue is not None:
        _check_embeddings("queue", queue)
        if jnp.shape(queue)[1] != q.shape[1]:
            raise ValueError(
                f"queue has feature dim {jnp.shape(queue)[1]} but q has {q.shape[1]}; "
                "build the queue from keys of the same projection head."
            )
        positive_logit = jnp.sum(q * k, axis=1) / temperature
        negative_logits = _similarity(q, l2_normalize(queue)) / temperature
        logits = jnp.concatenate([positive_logit[:, None], negative_logits], axis=1)
    else:
        logits = _similarity(q, _gather(k, axis_name)) / temperature
        positive_column = _first_global_row(q.shape[0], axis_name) + jnp.arange(q.shape[0])
        positive_logit = jnp.take_along_axis(logits, positive_column[:, None], axis=1)[:, 0]
    loss = jax.nn.logsumexp(logits, axis=1) - positive_logit
    return _global_mean(jnp.mean(loss), axis_name)


def alignment(
    z1: jax.Array,
    z2: jax.Array,
    *,
    alpha: float = 2.0,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Wang & Isola's alignment: mean distance between positive pairs.

    .. math:: \mathcal{L}_{align} = \mathbb{E}\, \|f(x) - f(y)\|_2^{\alpha}

    on L2-normalised features. Lower is better aligned.

    Args:
      z1: (n, d) embeddings of the first views.
      z2: (n, d) embeddings of the second views; ``(z1[i], z2[i])`` is a positive pair.
      alpha: the exponent alpha > 0 (paper default 2).
      axis_name: mesh axis of the data-parallel batch inside ``jax.shard_map``;
        averages over the global batch.

    Returns:
      The scalar mean over the pairs of the global batch, in [0, 2**alpha].

    Examples:
      >>> import jax.numpy as jnp
      >>> float(alignment(jnp.eye(2), jnp.eye(2)))
      0.0

    References:
      Wang & Isola, "Understanding Contrastive Representation Learning through
      Alignment and Uniformity on the Hypersphere", ICML 2020,
      https://arxiv.org/abs/2005.10242
    """
    _check_positive("alpha", alpha)
    _check_pair(z1, z2)
    squared_distance = jnp.sum(jnp.square(l2_normalize(z1) - l2_normalize(z2)), axis=1)
    if alpha == 2:
        distance_to_alpha = squared_distance
    else:
        # d^alpha = (d^2)^(alpha/2) has an infinite derivative at d = 0 for
        # alpha < 2; the double where keeps both value and gradient finite.
        is_positive = squared_distance > 0
        safe = jnp.where(is_positive, squared_distance, 1.0)
        distance_to_alpha = jnp.where(is_positive, safe ** (alpha / 2), 0.0)
    return _global_mean(jnp.mean(distance_to_alpha), axis_name)


def uniformity(z: jax.Array, *, t: float = 2.0, axis_name: str | None = None) -> jax.Array:
    r"""Wang & Isola's uniformity: log of the mean Gaussian potential of all pairs.

    .. math::
        \mathcal{L}_{uniform} = \log \frac{1}{N(N-1)/2}
            \sum_{i<j} \exp(-t \|f(x_i) - f(x_j)\|_2^2)

    on L2-normalised features; lower is more uniform. With ``axis_name`` the
    pairs are those of the global batch (the paper insists uniformity needs
    the whole batch): each device sums its rows against all gathered rows and
    the per-device log-sums are combined with a log-sum-exp.

    Args:
      z: (n, d) embeddings (local shard if ``axis_name``); the global batch
        must hold at least two rows.
      t: the potential's scale t > 0 (paper default 2).
      axis_name: mesh axis of the data-parallel batch inside ``jax.shard_map``.

    Returns:
      The scalar uniformity of the global batch, in [-4 t, 0].

    Examples:
      >>> import jax.numpy as jnp
      >>> round(float(uniformity(jnp.array([[1.0, 0.0], [-1.0, 0.0]]))), 4)
      -8.0

    References:
      Wang & Isola, ICML 2020, https://arxiv.org/abs/2005.10242
    """
    _check_positive("t", t)
    _check_embeddings("z", z)
    z = l2_normalize(z)
    candidates = _gather(z, axis_name)
    global_rows = candidates.shape[0]
    if global_rows < 2:
        raise ValueError(
            f"uniformity needs at least 2 embeddings in the global batch, got {global_rows}; "
            "pass a larger batch."
        )
    # For unit vectors ||a - b||^2 = 2 - 2 a.b; the clip removes round-off below 0.
    squared_distance = jnp.maximum(2.0 - 2.0 * _similarity(z, candidates), 0.0)
    rows = _first_global_row(z.shape[0], axis_name) + jnp.arange(z.shape[0])
    potential = jnp.where(_column_mask(rows, global_rows), -jnp.inf, -t * squared_distance)
    log_sum = jax.nn.logsumexp(potential)
    if axis_name is not None:
        # log sum_r exp(l_r) with a shared shift: exact for any shift, so the
        # shift carries no gradient; pmax keeps every exp argument <= 0.
        shift = jax.lax.pmax(jax.lax.stop_gradient(log_sum), axis_name)
        log_sum = shift + jnp.log(jax.lax.psum(jnp.exp(log_sum - shift), axis_name))
    # Ordered pairs i != j count each distinct pair twice: same mean.
    return log_sum - math.log(global_rows * (global_rows - 1))


def sup_con(
    z: jax.Array,
    labels: jax.Array,
    *,
    temperature: float = 0.1,
    anchors_without_positives: str = "exclude",
    axis_name: str | None = None,
) -> jax.Array:
    r"""Supervised contrastive loss L_out (Khosla et al. 2020).

    ``z`` holds V views of each of n examples. Every view is an anchor a; its
    positives P(a) are all other views whose example has the same label
    (including the other views of its own example), and its denominator runs
    over all other views of the global batch:

    .. math::
        \ell_a = -\frac{1}{|P(a)|} \sum_{p \in P(a)}
            \log \frac{\exp(s_{a,p}/T)}{\sum_{k \ne a} \exp(s_{a,k}/T)}

    An anchor whose label no other view of the global batch shares (possible
    only with V = 1) has no positive and ``l_a`` is 0/0.
    ``anchors_without_positives`` says what the loss does with such anchors:

    * ``"exclude"`` (default): they are left out; the loss is the mean of
      ``l_a`` over the anchors that have a positive, and a batch where no
      anchor has one gives 0.
    * ``"zero"``: they contribute 0 and count in a mean over all anchors. This
      is the official HobbitLong/SupContrast code since December 2023 (older
      copies of it compute 0/0 and return NaN).

    So ``"zero"`` = (anchors with positives / all anchors) x ``"exclude"``; the
    two agree whenever every anchor has a positive, as always with V >= 2.
    Unlike the reference code, the loss is not multiplied by
    ``T / base_temperature``.

    Args:
      z: (n, V, d) embeddings (local shard if ``axis_name``).
      labels: (n,) integer class labels.
      temperature: the softmax temperature T > 0 (paper: 0.1).
      anchors_without_positives: ``"exclude"`` or ``"zero"``, see above.
      axis_name: mesh axis of the data-parallel batch inside ``jax.shard_map``:
        candidates, labels and the anchor counts are global.

    Returns:
      The scalar loss of the global batch: the mean over the anchors with
      positives (``"exclude"``) or over all anchors (``"zero"``).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> z = jax.random.normal(jax.random.key(0), (4, 2, 8))
      >>> sup_con(z, jnp.array([0, 1, 0, 1])).shape
      ()
      >>> z = jax.random.normal(jax.random.key(0), (4, 1, 8))
      >>> labels = jnp.array([0, 0, 1, 2])  # the views of labels 1 and 2 have no positive
      >>> official = sup_con(z, labels, anchors_without_positives="zero")
      >>> bool(jnp.isclose(official, 0.5 * sup_con(z, labels)))
      True

    References:
      Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020,
      https://arxiv.org/abs/2004.11362; official code
      https://github.com/HobbitLong/SupContrast (losses.py)
    """
    if anchors_without_positives not in ANCHORS_WITHOUT_POSITIVES:
        raise ValueError(
            f"anchors_without_positives={anchors_without_positives!r} is unknown; "
            f"use one of {', '.join(map(repr, ANCHORS_WITHOUT_POSITIVES))}."
        )
    _check_positive("temperature", temperature)
    _check_embeddings("z", z, ndim=3)
    if jnp.shape(labels) != jnp.shape(z)[:1]:
        raise ValueError(
            f"labels must have shape ({jnp.shape(z)[0]},) to match z {jnp.shape(z)}, "
            f"got {jnp.shape(labels)}; pass one label per example."
        )
    local_examples, num_views, dim = z.shape
    z = l2_normalize(z)
    anchors = z.reshape(local_examples * num_views, dim)
    candidates = _gather(anchors, axis_name)
    anchor_labels = jnp.repeat(labels, num_views)
    candidate_labels = _gather(anchor_labels, axis_name)
    logits = _similarity(anchors, candidates) / temperature
    rows = _first_global_row(anchors.shape[0], axis_name) + jnp.arange(anchors.shape[0])
    is_self = _column_mask(rows, candidates.shape[0])
    is_positive = (anchor_labels[:, None] == candidate_labels[None, :]) & ~is_self
    log_normaliser = jax.nn.logsumexp(jnp.where(is_self, -jnp.inf, logits), axis=1)
    # The unmasked logits keep log_prob finite at the self column, which the
    # positive mask then zeroes; multiplying a -inf would give NaN.
    log_prob = logits - log_normaliser[:, None]
    num_positives = jnp.sum(is_positive, axis=1)
    has_positive = num_positives > 0
    anchor_loss = -jnp.sum(jnp.where(is_positive, log_prob, 0.0), axis=1) / jnp.maximum(
        num_positives, 1
    )
    loss_sum = jnp.sum(jnp.where(has_positive, anchor_loss, 0.0))
    if anchors_without_positives == "zero":
        # Every anchor of the global batch counts; all devices hold as many.
        devices = 1 if axis_name is None else jax.lax.axis_size(axis_name)
        anchor_count = jnp.float32(anchors.shape[0] * devices)
    else:
        anchor_count = jnp.sum(has_positive).astype(jnp.float32)
        if axis_name is not None:
            anchor_count = jax.lax.psum(anchor_count, axis_name)
    if axis_name is not None:
        loss_sum = jax.lax.psum(loss_sum, axis_name)
    return loss_sum / jnp.maximum(anchor_count, 1.0)


def _pairwise_importance(
    similarity, is_negative, alpha_type, temperature, alpha_exponent, inverse_exponent
):
    """Tian's alpha: per-anchor weights over the negatives, summing to one.

    The unnormalised weights are luckmatters' ``w`` (``loss/nt_xent.py``): with
    ``r = 1 - s``, ``exp(-r**alpha_exponent / temperature)`` or
    ``1 / (r**alpha_exponent + temperature)**inverse_exponent``. They are formed
    in log space, so the normalisation is a softmax that never overflows.
    """
    distance = jnp.maximum(1.0 - similarity, 0.0)
    if alpha_exponent != 1:
        distance = distance**alpha_exponent
    if alpha_type == "exp":
        log_weight = -distance / temperature
    elif alpha_type == "inverse":
        log_weight = -inverse_exponent * jnp.log(distance + temperature)
    else:
        log_weight = jnp.zeros_like(distance)
    return jax.nn.softmax(jnp.where(is_negative, log_weight, -jnp.inf), axis=1)


def alpha_cl(
    z1: jax.Array,
    z2: jax.Array,
    *,
    alpha_type: str = "exp",
    temperature: float = 0.5,
    alpha_exponent: float = 1.0,
    inverse_exponent: float = 1.0,
    alpha_eps: float = 0.0,
    axis_name: str | None = None,
) -> jax.Array:
    r"""Tian's alpha-CL: contrastive learning as coordinate-wise optimisation.

    The min player alpha assigns each pair (anchor a, negative k) an importance
    computed with stop-gradient from the current representation; the max player
    (the encoder) then minimises the alpha-weighted gap between negative and
    positive similarities:

    .. math::
        L = \frac{1}{2N} \sum_a \Big( \sum_{k \ne a, p(a)} \alpha_{ak} s_{ak}
            - s_{a,p(a)} \Big), \qquad \sum_k \alpha_{ak} = 1.

    With unit vectors ``||a - k||^2 = 2 - 2 s``, so this is (a quarter of) the
    paper's weighted difference of squared distances. Pairwise importance, with
    ``r = 1 - s`` the cosine distance, ``a = alpha_exponent``,
    ``b = inverse_exponent`` and ``tau = temperature``, normalised over each
    anchor's negatives:

    * ``'exp'``: ``alpha ∝ exp(-r**a / tau)``; with ``a = 1`` these are exactly
      the softmax weights of InfoNCE at that temperature (so its negative-pair
      gradient is InfoNCE's times T);
    * ``'inverse'``: ``alpha ∝ 1 / (r**a + tau)**b``;
    * ``'constant'``: uniform weights: the quadratic loss (see ``quadratic``).

    Every anchor is one of the 2N views, as in ``nt_xent``, and its negatives
    are the other 2N - 2 views of the global batch.

    The knobs are those of the official code, facebookresearch/luckmatters
    (``ssl/real-dataset``: ``trainer.nce_loss.*`` of its hydra config, used in
    ``loss/nt_xent.py``, read at commit 0d6abe9):

    ==========================  ===========================  ==========================
    jaxcl                       luckmatters                  meaning
    ==========================  ===========================  ==========================
    ``alpha_type='exp'``        ``alpha_type=exp``           ``exp(-r**a / tau)``
    ``alpha_type='inverse'``    ``alpha_type=inverse``       ``(r**a + tau)**-b``
    ``alpha_type='constant'``   ``loss_type=quadratic``      uniform alpha
    (none)                      ``alpha_type=quadratic``     thresholded
                                                             ``(mu - r**a)+ / tau``
    ``temperature``             ``temperature``              tau
    ``alpha_exponent``          ``alpha_exponent``           a, on r = 1 - s
    ``inverse_exponent``        ``inverse_exponent``         b, ``'inverse'`` only
    ``alpha_eps``               ``alpha_eps``                only 0 here, see below
    ==========================  ===========================  ==========================

    The paper's exponent p is on the distance d = ||z_a - z_k||, and r = d**2 / 2
    for unit vectors, so p = 2 a: the README's alpha-CL command with
    ``alpha_exponent=2`` is "p=4 in the paper".

    Deliberate differences from the official ``loss_type=dual`` at that
    commit: it uses the unnormalised weights ``w`` (its per-anchor term is
    ``sum_k w_ak`` times this one), while jaxcl normalises alpha per anchor so
    that the loss stays in [-2, 2] at any temperature; and jaxcl forms the
    weights in log space. ``alpha_eps`` is accepted so that configs can use the
    official names, but that version of ``loss/nt_xent.py`` defines no
    ``alpha_eps``: the README's alpha-CL command sets ``alpha_eps=0`` together
    with ``loss_type=dual2``, which that version lacks. Its meaning for other
    values is unverified, so any value other than 0 raises instead of guessing.

    Args:
      z1: (n, d) embeddings of the first views (local shard if ``axis_name``).
      z2: (n, d) embeddings of the second views.
      alpha_type: ``'exp'``, ``'inverse'`` or ``'constant'``.
      temperature: tau > 0 (reference default 0.5).
      alpha_exponent: a > 0, the exponent on the distance r (p = 2 a in the
        paper's notation).
      inverse_exponent: b > 0, the outer exponent of ``'inverse'``.
      alpha_eps: must be 0 (see above).
      axis_name: mesh axis to gather negatives over, inside ``jax.shard_map``.

    Returns:
      The scalar loss of the global batch, in [-2, 2].

    Examples:
      >>> import jax
      >>> z1, z2 = jax.random.normal(jax.random.key(0), (2, 8, 16))
      >>> alpha_cl(z1, z2, alpha_type="inverse", alpha_exponent=2.0).shape
      ()

    References:
      Tian, "Understanding Deep Contrastive Learning via Coordinate-wise
      Optimization", NeurIPS 2022, https://arxiv.org/abs/2201.12680; official
      code https://github.com/facebookresearch/luckmatters/tree/main/ssl/real-dataset
    """
    if alpha_type not in ALPHA_TYPES:
        raise ValueError(
            f"alpha_type={alpha_type!r} is unknown; use one of {', '.join(ALPHA_TYPES)}."
        )
    _check_positive("temperature", temperature)
    _check_positive("alpha_exponent", alpha_exponent)
    _check_positive("inverse_exponent", inverse_exponent)
    if alpha_eps != 0:
        raise ValueError(
            f"alpha_eps={alpha_eps!r} is not supported; use 0 (the official alpha_eps "
            "could not be verified, see jaxcl.losses.alpha_cl)."
        )
    views = _two_views(z1, z2, axis_name)
    similarity = _similarity(views.anchors, views.candidates)
    num_columns = similarity.shape[1]
    if num_columns < 3:
        raise ValueError(
            "alpha_cl needs at least 2 examples in the global batch to have negatives, "
            f"got {num_columns // 2}; pass a larger batch."
        )
    is_negative = ~(
        _column_mask(views.self_column, num_columns)
        | _column_mask(views.positive_column, num_columns)
    )
    # alpha is the min player's choice given the current encoder: no gradient.
    alpha = _pairwise_importance(
        jax.lax.stop_gradient(similarity),
        is_negative,
        alpha_type,
        temperature,
        alpha_exponent,
        inverse_exponent,
    )
    weighted_negative = jnp.sum(jnp.where(is_negative, alpha * similarity, 0.0), axis=1)
    positive = jnp.take_along_axis(similarity, views.positive_column[:, None], axis=1)[:, 0]
    return _global_mean(jnp.mean(weighted_negative - positive), axis_name)


def quadratic(z1: jax.Array, z2: jax.Array, *, axis_name: str | None = None) -> jax.Array:
    r"""Tian's quadratic loss: mean negative minus mean positive cosine similarity.

    The constant-alpha member of the alpha-CL family; the loss is linear in the
    similarities (quadratic in the representation):

    .. math::
        L = \frac{1}{2N} \sum_a \Big( \frac{1}{2N-2} \sum_{k \ne a, p(a)} s_{ak}
            - s_{a,p(a)} \Big)

    Args:
      z1: (n, d) embeddings of the first views (local shard if ``axis_name``).
      z2: (n, d) embeddings of the second views.
      axis_name: mesh axis to gather negatives over, inside ``jax.shard_map``.

    Returns:
      The scalar loss of the global batch, in [-2, 2].

    Examples:
      >>> import jax.numpy as jnp
      >>> float(quadratic(jnp.eye(2), jnp.eye(2)))
      -1.0

    References:
      Tian, NeurIPS 2022, https://arxiv.org/abs/2201.12680
    """
    return alpha_cl(z1, z2, alpha_type="constant", axis_name=axis_name)
