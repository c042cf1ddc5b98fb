"""Subspaces of linear representations and the sin-theta distance between them.

Everything here is NumPy in float64: these are the metrics the experiments
report, so they are computed exactly rather than in the float32 of training.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "orthonormal_columns",
    "random_subspace",
    "row_space_basis",
    "sin_theta_distance",
    "subspace_distance",
    "top_eigenvectors",
]


def orthonormal_columns(matrix) -> np.ndarray:
    """Returns an orthonormal basis (d, k) of the column space of a (d, k) matrix.

    Args:
      matrix: (d, k) array with k <= d.

    Returns:
      A (d, k) float64 array Q with Q^T Q = I and the same column space
      (when ``matrix`` has full column rank).
    """
    q, r = np.linalg.qr(np.asarray(matrix, np.float64))
    # Fix the signs so the basis is a deterministic function of the input.
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def random_subspace(rng: np.random.Generator, dim: int, rank: int) -> np.ndarray:
    """Draws a uniformly random ``rank``-dimensional subspace of R^dim.

    Args:
      rng: a NumPy random generator.
      dim: ambient dimension d.
      rank: subspace dimension r <= d.

    Returns:
      A (d, r) float64 array with orthonormal columns (Haar distributed).
    """
    return orthonormal_columns(rng.standard_normal((dim, rank)))


def row_space_basis(W) -> np.ndarray:
    """Orthonormal basis of the row space of a linear representation W (k x d).

    The representation ``x -> W x`` only depends on ``x`` through its projection
    on the row space of W, so that space is what a linear encoder has learned.

    Args:
      W: (k, d) encoder matrix.

    Returns:
      A (d, k) float64 array U with orthonormal columns spanning the rows of W
      (the top-k right singular vectors, so a rank-deficient W still gets k
      columns).
    """
    W = np.asarray(W, np.float64)
    _, _, vt = np.linalg.svd(W, full_matrices=False)
    return vt.T


def sin_theta_distance(U_star, U) -> float:
    """The sin-theta distance ``||U* U*^T - U U^T||_F / sqrt(2)`` of two subspaces.

    For subspaces of equal dimension r this is the l2 norm of the sines of the
    principal angles: 0 for the same subspace, sqrt(r) for orthogonal ones, and
    about sqrt(r (1 - r/d)) for a random one.

    Args:
      U_star: (d, r) orthonormal basis of the first subspace (the truth).
      U: (d, k) orthonormal basis of the second subspace.

    Returns:
      The distance as a Python float.

    References:
      Ji, Deng, Nakada, Zou, Zhang, "The Power of Contrast for Feature Learning:
      A Theoretical Analysis", 2021, https://arxiv.org/abs/2110.02473
    """
    U_star = np.asarray(U_star, np.float64)
    U = np.asarray(U, np.float64)
    if U_star.shape[0] != U.shape[0]:
        raise ValueError(
            f"subspaces live in different dimensions: {U_star.shape[0]} and {U.shape[0]}; "
            "pass (d, r) bases of the same R^d."
        )
    difference = U_star @ U_star.T - U @ U.T
    return float(np.linalg.norm(difference) / np.sqrt(2.0))


def subspace_distance(U_star, W) -> float:
    """Sin-theta distance between span(U*) and the row space of an encoder W.

    Args:
      U_star: (d, r) orthonormal basis of the core subspace.
      W: (k, d) linear encoder.

    Returns:
      ``sin_theta_distance(U_star, row_space_basis(W))``.
    """
    return sin_theta_distance(U_star, row_space_basis(W))


def top_eigenvectors(matrix, k: int) -> np.ndarray:
    """The eigenvectors of the k largest eigenvalues of a symmetric matrix.

    Args:
      matrix: (d, d) array; only its symmetric part is used.
      k: how many eigenvectors.

    Returns:
      A (d, k) float64 array, columns ordered by decreasing eigenvalue.
    """
    matrix = np.asarray(matrix, np.float64)
    _, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return vectors[:, ::-1][:, :k]
