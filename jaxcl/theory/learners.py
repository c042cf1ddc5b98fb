"""Linear representation learners on plain arrays: contrastive, PCA, autoencoder.

Each learner returns an encoder matrix W (k x d), the representation being
``x -> W x``; compare it to the truth with `jaxcl.theory.subspace_distance`.

* `linear_contrastive_encoder`: the linear contrastive loss of Ji et al.
  (`linear_contrastive_loss`), trained by Adam with fresh masks every step;
  `linear_contrastive_closed_form` is its exact minimiser.
* `nt_xent_encoder`: the same linear encoder trained with SimCLR's NT-Xent
  (`jaxcl.losses.nt_xent`).
* `sup_con_encoder`: supervised contrastive learning (`jaxcl.losses.sup_con`)
  when only a fraction of the examples carry labels.
* `pca_encoder` and `autoencoder_encoder`: the generative baselines.

Reference: Ji, Deng, Nakada, Zou, Zhang, "The Power of Contrast for Feature
Learning: A Theoretical Analysis", 2021, https://arxiv.org/abs/2110.02473
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl import losses
from jaxcl.theory.model import masked_views
from jaxcl.theory.subspace import top_eigenvectors
from jaxcl.theory.training import train

__all__ = [
    "autoencoder_encoder",
    "expected_masked_cross_covariance",
    "linear_contrastive_closed_form",
    "linear_contrastive_encoder",
    "linear_contrastive_loss",
    "nt_xent_encoder",
    "pca_encoder",
    "sup_con_encoder",
    "supervised_contrastive_matrix",
]


def _initial_encoder(seed: int, rank: int, dim: int) -> jax.Array:
    # Small random init: far from every fixed point that matters, and the same
    # for every method that is given the same seed.
    return 0.1 * jax.random.normal(jax.random.key(seed), (rank, dim)) / np.sqrt(dim)


def _train_encoder(
    loss, data, *, rank, seed, steps, learning_rate, batch_size, hyper=None, params=None
):
    """Trains ``loss`` with Adam from the shared initialisation; returns the (k, d) encoder."""
    if params is None:
        params = {"encoder": _initial_encoder(seed, rank, data["x"].shape[1])}
    result = train(
        loss,
        params,
        data,
        key=jax.random.key(seed + 1),
        steps=steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        hyper=hyper,
    )
    return np.asarray(result.params["encoder"])


def pca_encoder(x, rank: int) -> np.ndarray:
    """PCA: the top-``rank`` eigenvectors of the sample covariance, as rows.

    Args:
      x: (n, d) examples.
      rank: k, the representation dimension.

    Returns:
      The (k, d) encoder whose rows are the leading principal directions.
    """
    x = np.asarray(x, np.float64)
    x = x - x.mean(axis=0)
    return top_eigenvectors(x.T @ x / len(x), rank).T


def _autoencoder_loss(params, batch, key, hyper):
    del key, hyper
    x = batch["x"]
    reconstruction = (x @ params["encoder"].T) @ params["decoder"].T
    return jnp.mean(jnp.sum(jnp.square(x - reconstruction), axis=1))


def autoencoder_encoder(
    x,
    rank: int,
    *,
    seed: int = 0,
    steps: int = 600,
    learning_rate: float = 0.02,
    batch_size: int | None = None,
) -> np.ndarray:
    """A linear autoencoder ``x -> V W x`` trained on the squared reconstruction error.

    Its global minimisers span the PCA subspace (Baldi & Hornik 1989), which is
    why Ji et al. treat autoencoders and PCA together; training it is the check
    that the gradient-trained generative baseline really lands there.

    Args:
      x: (n, d) examples.
      rank: k, the bottleneck dimension.
      seed: seed of the initialisation.
      steps: Adam steps.
      learning_rate: Adam's learning rate.
      batch_size: rows per step; ``None`` for full batch.

    Returns:
      The (k, d) encoder W.
    """
    x = jnp.asarray(x, jnp.float32)
    encoder = _initial_encoder(seed, rank, x.shape[1])
    params = {"encoder": encoder, "decoder": encoder.T}
    return _train_encoder(
        _autoencoder_loss,
        {"x": x},
        rank=rank,
        seed=seed,
        steps=steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        params=params,
    )


def linear_contrastive_loss(W, x1, x2, *, regularization: float = 1.0):
    r"""The linear contrastive loss of a linear encoder W on positive pairs.

    .. math::
        L(W) = -\frac{1}{n}\sum_i \langle W a_i, W b_i\rangle
               + \frac{1}{n(n-1)}\sum_{i \ne j} \langle W a_i, W b_j\rangle
               + \frac{\lambda}{2}\,\|W W^\top\|_F^2

    with ``(a_i, b_i)`` the two views of example i. The loss is linear in the
    similarities (the constant-alpha member of Tian's alpha-CL family, without
    normalisation) and the penalty keeps it bounded below. It equals
    ``-tr(W M W^T) + lambda/2 ||W^T W||_F^2`` with M the symmetrised positive
    minus negative cross-covariance, so its minimisers are known in closed form
    (`linear_contrastive_closed_form`): this is why it is the loss of the
    theory, where NT-Xent has no closed form.

    Args:
      W: (k, d) encoder.
      x1: (n, d) first views.
      x2: (n, d) second views.
      regularization: lambda > 0.

    Returns:
      The scalar loss.

    References:
      Ji et al. 2021, https://arxiv.org/abs/2110.02473 (linear representation,
      linear contrastive loss with a Frobenius penalty).
    """
    z1 = x1 @ W.T
    z2 = x2 @ W.T
    n = z1.shape[0]
    positive = jnp.sum(z1 * z2) / n
    # sum_{i != j} <z1_i, z2_j> without the n x n matrix.
    negative = (jnp.sum(z1.sum(0) * z2.sum(0)) - jnp.sum(z1 * z2)) / (n * (n - 1))
    gram = W @ W.T
    return -positive + negative + 0.5 * regularization * jnp.sum(jnp.square(gram))


def _masked_linear_contrastive_loss(params, batch, key, hyper):
    x1, x2 = masked_views(key, batch["x"], hyper["keep_prob"])
    return linear_contrastive_loss(
        params["encoder"], x1, x2, regularization=hyper["regularization"]
    )


def linear_contrastive_encoder(
    x,
    rank: int,
    *,
    seed: int = 0,
    keep_prob: float = 0.5,
    regularization: float = 1.0,
    steps: int = 600,
    learning_rate: float = 0.02,
    batch_size: int | None = None,
) -> np.ndarray:
    """Trains a linear encoder on `linear_contrastive_loss` with random masking.

    Every step draws fresh masks, so Adam minimises the loss averaged over
    augmentations, whose minimiser is `linear_contrastive_closed_form` of
    `expected_masked_cross_covariance`.

    Args:
      x: (n, d) examples.
      rank: k, the representation dimension.
      seed: seed of the initialisation and of the masks.
      keep_prob: probability that a coordinate goes to the first view.
      regularization: lambda of the loss.
      steps: Adam steps.
      learning_rate: Adam's learning rate.
      batch_size: rows per step; ``None`` for full batch.

    Returns:
      The (k, d) encoder W.
    """
    x = jnp.asarray(x, jnp.float32)
    return _train_encoder(
        _masked_linear_contrastive_loss,
        {"x": x},
        rank=rank,
        seed=seed,
        steps=steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        hyper={"keep_prob": keep_prob, "regularization": regularization},
    )


def expected_masked_cross_covariance(x, keep_prob: float = 0.5) -> np.ndarray:
    """The matrix M of `linear_contrastive_loss`, averaged over random masks.

    For views ``(A x, (I - A) x)`` with i.i.d. Bernoulli(p) diagonals,
    ``E[a_k (1 - a_l)]`` is ``p (1 - p)`` for k != l and 0 for k = l: the
    positive term sees the sample second moment with its diagonal deleted. The
    negative term pairs different examples, whose masks are independent, so it
    subtracts ``p (1 - p)`` times the mean cross-product of distinct examples
    (about zero for centred data). Deleting the diagonal is
    what removes the heteroskedastic noise, whose covariance is diagonal.

    Args:
      x: (n, d) examples.
      keep_prob: p.

    Returns:
      The (d, d) symmetric matrix M; the loss is ``-tr(W M W^T) + penalty``.
    """
    x = np.asarray(x, np.float64)
    n = len(x)
    total = x.sum(axis=0)
    second_moment = x.T @ x / n
    # (1/(n(n-1))) sum_{i != j} x_i x_j^T.
    cross_examples = (np.outer(total, total) - x.T @ x) / (n * (n - 1))
    # Masks of different examples are independent, so the negative term keeps
    # its diagonal; only the positive pair shares (complementary) masks.
    np.fill_diagonal(second_moment, 0.0)
    return keep_prob * (1 - keep_prob) * (second_moment - cross_examples)


def linear_contrastive_closed_form(M, rank: int, *, regularization: float = 1.0) -> np.ndarray:
    """The exact minimiser of ``-tr(W M W^T) + lambda/2 ||W^T W||_F^2`` over (k, d) W.

    With ``P = W^T W`` (PSD, rank <= k) the loss is ``-tr(M P) + lambda/2 ||P||_F^2``,
    minimised by ``P = sum_{j<=k} max(mu_j, 0)/lambda v_j v_j^T`` over the top
    eigenpairs of M; W is any square root, here ``diag(sqrt(max(mu, 0)/lambda)) V^T``.

    Args:
      M: (d, d) symmetric matrix (e.g. `expected_masked_cross_covariance`).
      rank: k.
      regularization: lambda > 0.

    Returns:
      The (k, d) encoder W (unique up to a k x k rotation).
    """
    M = np.asarray(M, np.float64)
    eigenvalues, eigenvectors = np.linalg.eigh((M + M.T) / 2)
    order = np.argsort(eigenvalues)[::-1][:rank]
    scale = np.sqrt(np.maximum(eigenvalues[order], 0.0) / regularization)
    return scale[:, None] * eigenvectors[:, order].T


def _nt_xent_loss(params, batch, key, hyper):
    x1, x2 = masked_views(key, batch["x"], hyper["keep_prob"])
    W = params["encoder"]
    return losses.nt_xent(x1 @ W.T, x2 @ W.T, temperature=hyper["temperature"])


def nt_xent_encoder(
    x,
    rank: int,
    *,
    seed: int = 0,
    keep_prob: float = 0.5,
    temperature: float = 0.5,
    steps: int = 600,
    learning_rate: float = 0.02,
    batch_size: int | None = 256,
) -> np.ndarray:
    """Trains a linear encoder with NT-Xent (`jaxcl.losses.nt_xent`) on masked views.

    Args:
      x: (n, d) examples.
      rank: k, the representation dimension.
      seed: seed of the initialisation, the masks and the batches.
      keep_prob: probability that a coordinate goes to the first view.
      temperature: NT-Xent temperature.
      steps: Adam steps.
      learning_rate: Adam's learning rate.
      batch_size: examples per step (the negatives of each anchor).

    Returns:
      The (k, d) encoder W.
    """
    x = jnp.asarray(x, jnp.float32)
    return _train_encoder(
        _nt_xent_loss,
        {"x": x},
        rank=rank,
        seed=seed,
        steps=steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        hyper={"keep_prob": keep_prob, "temperature": temperature},
    )


def _sup_con_loss(params, batch, key, hyper):
    x1, x2 = masked_views(key, batch["x"], hyper["keep_prob"])
    W = params["encoder"]
    views = jnp.stack([x1 @ W.T, x2 @ W.T], axis=1)
    return losses.sup_con(views, batch["label"], temperature=hyper["temperature"])


def sup_con_encoder(
    x,
    labels,
    labelled_fraction: float,
    rank: int,
    *,
    seed: int = 0,
    keep_prob: float = 0.5,
    temperature: float = 0.5,
    steps: int = 600,
    learning_rate: float = 0.02,
    batch_size: int | None = 256,
) -> np.ndarray:
    """Supervised contrastive learning when only some examples carry a label.

    The first ``round(labelled_fraction * n)`` examples keep their label; every
    other example gets a label of its own. `jaxcl.losses.sup_con` then treats
    an unlabelled anchor exactly as SimCLR does (its only positive is its other
    view) and a labelled anchor as SupCon does (its positives are all views of
    its class), so one loss interpolates from self-supervised (fraction 0) to
    fully supervised contrastive learning (fraction 1).

    Args:
      x: (n, d) examples.
      labels: (n,) non-negative integer labels of a source task.
      labelled_fraction: fraction of examples whose label is used, in [0, 1].
      rank: k, the representation dimension.
      seed: seed of the initialisation, the masks and the batches.
      keep_prob: probability that a coordinate goes to the first view.
      temperature: SupCon temperature.
      steps: Adam steps.
      learning_rate: Adam's learning rate.
      batch_size: examples per step.

    Returns:
      The (k, d) encoder W.

    References:
      Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020,
      https://arxiv.org/abs/2004.11362; Ji et al. 2021 (the effect of labels).
    """
    x = jnp.asarray(x, jnp.float32)
    labels = np.asarray(labels, np.int32)
    if labels.min() < 0:
        raise ValueError("labels must be non-negative; negative ids mark unlabelled examples.")
    num_labelled = round(labelled_fraction * len(labels))
    # Negative ids cannot collide with a class, and each is used once.
    unique_ids = -1 - np.arange(len(labels), dtype=np.int32)
    used = np.where(np.arange(len(labels)) < num_labelled, labels, unique_ids)
    return _train_encoder(
        _sup_con_loss,
        {"x": x, "label": jnp.asarray(used)},
        rank=rank,
        seed=seed,
        steps=steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        hyper={"keep_prob": keep_prob, "temperature": temperature},
    )


def supervised_contrastive_matrix(
    x, labels, labelled_fraction: float, *, keep_prob: float = 0.5
) -> np.ndarray:
    """The matrix M of a linear supervised contrastive loss with partial labels.

    The linear analogue of `sup_con_encoder`: each example is one anchor and
    contributes the mean inner product with its positives. An unlabelled
    anchor's positive is its other masked view (``p (1 - p)`` times its
    second moment with the diagonal deleted, as in
    `expected_masked_cross_covariance`); a labelled anchor's positives are the
    other labelled examples of its class, whose masks are independent of its
    own (``p (1 - p) x_i x_j^T``, diagonal kept). Negatives are left out: for
    centred data they contribute about zero (see `linear_contrastive_loss`).
    The labelled examples are the first ``round(labelled_fraction * n)``.

    Args:
      x: (n, d) examples.
      labels: (n,) integer labels of the source task.
      labelled_fraction: fraction of labelled examples, in [0, 1].
      keep_prob: probability that a coordinate goes to the first view.

    Returns:
      The (d, d) symmetric M; `linear_contrastive_closed_form` gives the encoder.

    References:
      Ji et al. 2021, https://arxiv.org/abs/2110.02473 (Section on the impact
      of labelled data); Khosla et al. 2020, https://arxiv.org/abs/2004.11362
    """
    x = np.asarray(x, np.float64)
    labels = np.asarray(labels)
    n = len(x)
    num_labelled = round(labelled_fraction * n)
    unlabelled = x[num_labelled:]
    M = np.zeros((x.shape[1], x.shape[1]))
    if len(unlabelled):
        self_part = unlabelled.T @ unlabelled
        np.fill_diagonal(self_part, 0.0)
        M += self_part / n
    labelled, labelled_classes = x[:num_labelled], labels[:num_labelled]
    for label in np.unique(labelled_classes):
        members = labelled[labelled_classes == label]
        if len(members) < 2:
            continue
        total = members.sum(axis=0)
        # sum over ordered pairs i != j of the class, each anchor averaged over
        # its len(members) - 1 positives.
        pairs = np.outer(total, total) - members.T @ members
        M += pairs / (len(members) - 1) / n
    return keep_prob * (1 - keep_prob) * M
