"""Wang & Isola (2020): optimise alignment and uniformity directly."""

from jaxcl import losses
from jaxcl.methods.base import Embeddings, Method, check_positive, two_views


def align_uniform_loss(embeddings: Embeddings, labels, extras, settings, axis_name, step):
    """``w_a * align(z1, z2) + w_u * (unif(z1) + unif(z2)) / 2`` over the global batch.

    The paper's STL-10 objective with weights 1 and 1, alpha 2 and t 2.
    """
    z1, z2 = two_views(embeddings.projections)
    align = losses.alignment(z1, z2, alpha=settings.align_alpha, axis_name=axis_name)
    uniform = 0.5 * (
        losses.uniformity(z1, t=settings.uniform_t, axis_name=axis_name)
        + losses.uniformity(z2, t=settings.uniform_t, axis_name=axis_name)
    )
    loss = settings.align_weight * align + settings.uniform_weight * uniform
    return loss, extras, {}


def _validate(settings, config):
    check_positive(settings, "align_uniform", "align_alpha", "uniform_t")
    check_positive(settings, "align_uniform", "align_weight", "uniform_weight")


ALIGN_UNIFORM = Method(
    name="align_uniform",
    loss=align_uniform_loss,
    defaults=lambda: {
        "align_weight": 1.0,
        "uniform_weight": 1.0,
        "align_alpha": 2.0,
        "uniform_t": 2.0,
    },
    validate=_validate,
    paper="Wang & Isola, ICML 2020, arXiv:2005.10242",
)
