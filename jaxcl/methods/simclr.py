"""SimCLR (Chen et al. 2020): NT-Xent over the two views of the global batch."""

from jaxcl import losses
from jaxcl.methods.base import Embeddings, Method, check_positive, two_views


def simclr_loss(embeddings: Embeddings, labels, extras, settings, axis_name, step):
    """NT-Xent of the two views' projections, negatives gathered over ``axis_name``.

    This is half the value the official SimCLR code reports (it sums the two
    directional means); see ``jaxcl.losses.nt_xent``.
    """
    z1, z2 = two_views(embeddings.projections)
    loss = losses.nt_xent(z1, z2, temperature=settings.temperature, axis_name=axis_name)
    return loss, extras, {}


def _validate(settings, config):
    check_positive(settings, "simclr", "temperature")


SIMCLR = Method(
    name="simclr",
    loss=simclr_loss,
    # The official default; the CIFAR recipe uses 0.5.
    defaults=lambda: {"temperature": 0.1},
    validate=_validate,
    paper="Chen et al., A Simple Framework for Contrastive Learning, arXiv:2002.05709",
)
