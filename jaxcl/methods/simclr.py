"""SimCLR (Chen et al. 2020): NT-Xent over the two views of the global batch."""

from jaxcl import losses
from jaxcl.methods.base import Embeddings, Method, two_views


def simclr_loss(embeddings: Embeddings, labels, extras, config, axis_name):
    """NT-Xent of the two views' projections, negatives gathered over ``axis_name``.

    This is half the value the official SimCLR code reports (it sums the two
    directional means); see ``jaxcl.losses.nt_xent``.
    """
    z1, z2 = two_views(embeddings.projections)
    loss = losses.nt_xent(z1, z2, temperature=config.temperature, axis_name=axis_name)
    return loss, extras, {}


SIMCLR = Method(
    name="simclr",
    loss=simclr_loss,
    paper="Chen et al., A Simple Framework for Contrastive Learning, arXiv:2002.05709",
)
