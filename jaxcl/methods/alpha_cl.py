"""Tian (2022): alpha-CL and its constant-alpha member, the quadratic loss."""

from jaxcl import losses
from jaxcl.methods.base import Embeddings, Method, MethodSettingError, check_positive, two_views


def alpha_cl_loss(embeddings: Embeddings, labels, extras, settings, axis_name, step):
    """alpha-CL with the pairwise importance of ``settings`` (see ``jaxcl.losses.alpha_cl``)."""
    z1, z2 = two_views(embeddings.projections)
    loss = losses.alpha_cl(
        z1,
        z2,
        alpha_type=settings.alpha_type,
        temperature=settings.temperature,
        alpha_exponent=settings.alpha_exponent,
        inverse_exponent=settings.inverse_exponent,
        alpha_eps=settings.alpha_eps,
        axis_name=axis_name,
    )
    return loss, extras, {}


def quadratic_loss(embeddings: Embeddings, labels, extras, settings, axis_name, step):
    """The quadratic loss: mean negative minus mean positive similarity."""
    z1, z2 = two_views(embeddings.projections)
    return losses.quadratic(z1, z2, axis_name=axis_name), extras, {}


def _validate(settings, config):
    if settings.alpha_type not in losses.ALPHA_TYPES:
        raise MethodSettingError(
            "alpha_cl.alpha_type",
            settings.alpha_type,
            "is unknown",
            f"use one of {', '.join(losses.ALPHA_TYPES)}",
        )
    check_positive(settings, "alpha_cl", "temperature", "alpha_exponent", "inverse_exponent")
    if not 0 <= settings.alpha_eps < 1:
        raise MethodSettingError(
            "alpha_cl.alpha_eps", settings.alpha_eps, "must be in [0, 1)", "use 0"
        )


ALPHA_CL = Method(
    name="alpha_cl",
    loss=alpha_cl_loss,
    # The names of the official code (facebookresearch/luckmatters); with these
    # defaults 'exp' is exp(-r / tau), the InfoNCE weights at temperature tau.
    defaults=lambda: {
        "alpha_type": "exp",
        "temperature": 0.5,
        "alpha_exponent": 1.0,
        "inverse_exponent": 1.0,
        "alpha_eps": 0.0,
    },
    validate=_validate,
    paper="Tian, NeurIPS 2022, arXiv:2201.12680",
)

QUADRATIC = Method(
    name="quadratic",
    loss=quadratic_loss,
    paper="Tian, NeurIPS 2022, arXiv:2201.12680",
)
