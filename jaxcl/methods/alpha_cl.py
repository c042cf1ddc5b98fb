"""Tian (2022): alpha-CL and its constant-alpha member, the quadratic loss."""

from jaxcl import losses
from jaxcl.methods.base import Embeddings, Method, two_views


def alpha_cl_loss(embeddings: Embeddings, labels, extras, config, axis_name):
    """alpha-CL with ``config.alpha_type``, ``config.temperature`` and ``config.alpha_power``."""
    z1, z2 = two_views(embeddings.projections)
    loss = losses.alpha_cl(
        z1,
        z2,
        alpha_type=config.alpha_type,
        temperature=config.temperature,
        power=config.alpha_power,
        axis_name=axis_name,
    )
    return loss, extras, {}


def quadratic_loss(embeddings: Embeddings, labels, extras, config, axis_name):
    """The quadratic loss: mean negative minus mean positive similarity."""
    z1, z2 = two_views(embeddings.projections)
    return losses.quadratic(z1, z2, axis_name=axis_name), extras, {}


ALPHA_CL = Method(
    name="alpha_cl",
    loss=alpha_cl_loss,
    paper="Tian, NeurIPS 2022, arXiv:2201.12680",
)

QUADRATIC = Method(
    name="quadratic",
    loss=quadratic_loss,
    paper="Tian, NeurIPS 2022, arXiv:2201.12680",
)
