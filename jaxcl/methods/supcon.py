"""Supervised contrastive learning (Khosla et al. 2020), the supervised reference."""

from jaxcl import losses
from jaxcl.methods.base import Embeddings, Method, MethodSettingError, check_positive

ANCHOR_REDUCTIONS = ("exclude", "zero")


def supcon_loss(embeddings: Embeddings, labels, extras, settings, axis_name, step):
    """L_out over all views of the global batch, positives sharing the class label."""
    loss = losses.sup_con(
        embeddings.projections,
        labels,
        temperature=settings.temperature,
        anchors_without_positives=settings.anchors_without_positives,
        axis_name=axis_name,
    )
    return loss, extras, {}


def _validate(settings, config):
    check_positive(settings, "supcon", "temperature")
    if settings.anchors_without_positives not in ANCHOR_REDUCTIONS:
        raise MethodSettingError(
            "supcon.anchors_without_positives",
            settings.anchors_without_positives,
            "is unknown",
            f"use one of {', '.join(ANCHOR_REDUCTIONS)}",
        )


SUPCON = Method(
    name="supcon",
    loss=supcon_loss,
    # "exclude": the mean over anchors that have a positive; "zero": the official
    # code's reduction since December 2023 (see jaxcl.losses.sup_con).
    defaults=lambda: {"temperature": 0.1, "anchors_without_positives": "exclude"},
    validate=_validate,
    uses_labels=True,
    paper="Khosla et al., NeurIPS 2020, arXiv:2004.11362",
)
