"""Supervised contrastive learning (Khosla et al. 2020), the supervised reference."""

from jaxcl import losses
from jaxcl.methods.base import Embeddings, Method


def supcon_loss(embeddings: Embeddings, labels, extras, config, axis_name):
    """L_out over all views of the global batch, positives sharing the class label."""
    loss = losses.sup_con(
        embeddings.projections, labels, temperature=config.temperature, axis_name=axis_name
    )
    return loss, extras, {}


SUPCON = Method(
    name="supcon",
    loss=supcon_loss,
    uses_labels=True,
    paper="Khosla et al., NeurIPS 2020, arXiv:2004.11362",
)
