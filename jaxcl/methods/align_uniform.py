"""Wang & Isola (2020): optimise alignment and uniformity directly."""

from jaxcl import losses
from jaxcl.methods.base import Embeddings, Method, two_views


def align_uniform_loss(embeddings: Embeddings, labels, extras, config, axis_name):
    """``w_a * align(z1, z2) + w_u * (unif(z1) + unif(z2)) / 2`` over the global batch.

    The paper's STL-10 objective with weights 1 and 1, alpha 2 and t 2.
    """
    z1, z2 = two_views(embeddings.projections)
    align = losses.alignment(z1, z2, alpha=config.align_alpha, axis_name=axis_name)
    uniform = 0.5 * (
        losses.uniformity(z1, t=config.uniform_t, axis_name=axis_name)
        + losses.uniformity(z2, t=config.uniform_t, axis_name=axis_name)
    )
    loss = config.align_weight * align + config.uniform_weight * uniform
    return loss, extras, {}


ALIGN_UNIFORM = Method(
    name="align_uniform",
    loss=align_uniform_loss,
    paper="Wang & Isola, ICML 2020, arXiv:2005.10242",
)
