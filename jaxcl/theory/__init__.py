"""Theory toolkit: the synthetic models and experiments of the papers jaxcl follows.

Everything runs on plain arrays on a CPU in seconds to minutes:

- `jaxcl.theory.model`: the spiked covariance model ``x = U* z + noise`` with
  homoskedastic or heteroskedastic noise, and random-masking augmentation
  (Ji, Deng, Nakada, Zou, Zhang 2021, arXiv:2110.02473).
- `jaxcl.theory.learners`: linear encoders trained with the linear contrastive
  loss, NT-Xent or SupCon (from `jaxcl.losses`), and the PCA and autoencoder
  baselines, with closed forms where the theory has them.
- `jaxcl.theory.subspace`: the sin-theta distance between subspaces.
- `jaxcl.theory.downstream`: linear-regression, linear-classification and kNN probes.
- `jaxcl.theory.training`: the jitted optax loop the toys share.
- Experiments, each a command that writes its figures and a JSON of its numbers:

  * ``python -m jaxcl.theory.spiked_covariance --out=DIR`` (Ji et al.),
  * ``python -m jaxcl.theory.alpha_cl --out=DIR`` (Tian 2022, alpha-CL),
  * ``python -m jaxcl.theory.align_uniform --out=DIR`` (Wang & Isola 2020),
    whose `plot_alignment_uniformity` also plots the metrics of saved encoders.

See docs/theory.md for what each experiment shows.
"""

from jaxcl.theory.downstream import (
    knn_classification_probe,
    linear_classification_probe,
    linear_regression_probe,
)
from jaxcl.theory.learners import (
    autoencoder_encoder,
    expected_masked_cross_covariance,
    linear_contrastive_closed_form,
    linear_contrastive_encoder,
    linear_contrastive_loss,
    nt_xent_encoder,
    pca_encoder,
    sup_con_encoder,
    supervised_contrastive_matrix,
)
from jaxcl.theory.model import (
    SpikedCovariance,
    make_spiked_covariance,
    masked_views,
    noise_variances,
    random_masks,
)
from jaxcl.theory.subspace import (
    orthonormal_columns,
    random_subspace,
    row_space_basis,
    sin_theta_distance,
    subspace_distance,
    top_eigenvectors,
)
from jaxcl.theory.training import TrainResult, train


def __getattr__(name):
    # Lazy, so that ``python -m jaxcl.theory.align_uniform`` does not find its
    # own module already imported by this package (runpy warns about that).
    if name == "plot_alignment_uniformity":
        from jaxcl.theory.align_uniform import plot_alignment_uniformity

        return plot_alignment_uniformity
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SpikedCovariance",
    "TrainResult",
    "autoencoder_encoder",
    "expected_masked_cross_covariance",
    "knn_classification_probe",
    "linear_classification_probe",
    "linear_contrastive_closed_form",
    "linear_contrastive_encoder",
    "linear_contrastive_loss",
    "linear_regression_probe",
    "make_spiked_covariance",
    "masked_views",
    "noise_variances",
    "nt_xent_encoder",
    "orthonormal_columns",
    "pca_encoder",
    "plot_alignment_uniformity",  # provided by __getattr__
    "random_masks",
    "random_subspace",
    "row_space_basis",
    "sin_theta_distance",
    "subspace_distance",
    "sup_con_encoder",
    "supervised_contrastive_matrix",
    "top_eigenvectors",
    "train",
]
