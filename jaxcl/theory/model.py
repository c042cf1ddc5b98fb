"""The spiked covariance model and random-masking augmentation of Ji et al. (2021).

Data are ``x = U* z + xi`` with a core subspace ``U*`` (d x r, orthonormal
columns), core features ``z ~ N(0, diag(s^2))`` and independent Gaussian noise
``xi ~ N(0, diag(sigma_1^2, ..., sigma_d^2))``. The noise is homoskedastic when
all ``sigma_i`` are equal and heteroskedastic otherwise; heteroskedastic noise
is what biases PCA and autoencoders, whose solutions follow the largest
variances whether they come from the core or from the noise.

The augmentation is random masking: a diagonal 0/1 matrix A, and the positive
pair ``(A x, (I - A) x)``. The two views share no coordinate, so their noise is
independent and only the core features can make them agree.

Reference: Ji, Deng, Nakada, Zou, Zhang, "The Power of Contrast for Feature
Learning: A Theoretical Analysis", 2021, https://arxiv.org/abs/2110.02473
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxcl.theory.subspace import random_subspace

__all__ = [
    "SpikedCovariance",
    "make_spiked_covariance",
    "masked_views",
    "noise_variances",
    "random_masks",
]


@dataclasses.dataclass(frozen=True)
class SpikedCovariance:
    """A spiked covariance model ``x = U* z + xi``.

    Attributes:
      core_basis: (d, r) orthonormal basis U* of the core subspace.
      signal_std: (r,) standard deviation s_k of each core feature z_k.
      noise_std: (d,) standard deviation sigma_i of the noise on coordinate i.
    """

    core_basis: np.ndarray
    signal_std: np.ndarray
    noise_std: np.ndarray

    @property
    def dim(self) -> int:
        """The ambient dimension d."""
        return self.core_basis.shape[0]

    @property
    def rank(self) -> int:
        """The core dimension r."""
        return self.core_basis.shape[1]

    def covariance(self) -> np.ndarray:
        """The population covariance ``U* diag(s^2) U*^T + diag(sigma^2)`` (d, d)."""
        signal = (self.core_basis * self.signal_std**2) @ self.core_basis.T
        return signal + np.diag(self.noise_std**2)

    def sample(self, seed: int, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
        """Draws ``num_samples`` i.i.d. examples.

        Args:
          seed: seed of the NumPy generator (the same seed gives the same data).
          num_samples: n.

        Returns:
          ``(x, z)``: the (n, d) float32 data and the (n, r) core features.
        """
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((num_samples, self.rank)) * self.signal_std
        noise = rng.standard_normal((num_samples, self.dim)) * self.noise_std
        x = z @ self.core_basis.T + noise
        return x.astype(np.float32), z.astype(np.float32)


def noise_variances(
    dim: int, *, noise_std: float = 1.0, noise_ratio: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Per-coordinate noise variances with a given heteroskedasticity.

    The variances are geometrically spaced between v and ``noise_ratio * v``,
    scaled so their mean is ``noise_std**2`` (the total noise power does not
    change along a sweep), and randomly assigned to coordinates so they are
    unrelated to the core subspace.

    Args:
      dim: d.
      noise_std: root mean noise variance sigma.
      noise_ratio: largest over smallest variance, >= 1; 1 is homoskedastic.
      seed: seed of the coordinate permutation.

    Returns:
      A (d,) float64 array of variances.
    """
    if noise_ratio < 1:
        raise ValueError(f"noise_ratio must be >= 1 (largest / smallest), got {noise_ratio}.")
    variances = np.geomspace(1.0, noise_ratio, dim)
    variances *= noise_std**2 / variances.mean()
    return np.random.default_rng(seed).permutation(variances)


def make_spiked_covariance(
    dim: int,
    rank: int,
    *,
    seed: int = 0,
    signal_std=2.0,
    noise_std: float = 1.0,
    noise_ratio: float = 1.0,
) -> SpikedCovariance:
    """Builds a spiked covariance model with a random (incoherent) core subspace.

    A Haar-random U* is incoherent with high probability (its rows have norm
    about sqrt(r/d)), the condition under which Ji et al. prove contrastive
    learning with masking recovers it.

    Args:
      dim: ambient dimension d.
      rank: core dimension r.
      seed: seed of U* and of the noise layout.
      signal_std: s, a scalar or one value per core feature.
      noise_std: root mean noise variance.
      noise_ratio: largest over smallest noise variance (see `noise_variances`).

    Returns:
      A `SpikedCovariance`.
    """
    rng = np.random.default_rng(seed)
    core_basis = random_subspace(rng, dim, rank)
    signal = np.broadcast_to(np.asarray(signal_std, np.float64), (rank,)).copy()
    variances = noise_variances(
        dim, noise_std=noise_std, noise_ratio=noise_ratio, seed=int(rng.integers(2**31))
    )
    return SpikedCovariance(core_basis, signal, np.sqrt(variances))


def random_masks(key: jax.Array, shape, keep_prob: float = 0.5) -> jax.Array:
    """Diagonals of random masking matrices A: i.i.d. Bernoulli(keep_prob) entries.

    Args:
      key: PRNG key.
      shape: (n, d): one diagonal per example.
      keep_prob: probability that a coordinate goes to the first view.

    Returns:
      A float32 array of zeros and ones of the given shape.
    """
    return jax.random.bernoulli(key, keep_prob, shape).astype(jnp.float32)


def masked_views(
    key: jax.Array, x: jax.Array, keep_prob: float = 0.5
) -> tuple[jax.Array, jax.Array]:
    """The positive pair ``(A x, (I - A) x)`` of complementary random masks.

    Args:
      key: PRNG key (a new key gives new masks).
      x: (n, d) examples.
      keep_prob: probability that a coordinate goes to the first view.

    Returns:
      ``(view1, view2)`` with ``view1 + view2 == x`` and disjoint supports.
    """
    masks = random_masks(key, x.shape, keep_prob)
    return x * masks, x * (1.0 - masks)
