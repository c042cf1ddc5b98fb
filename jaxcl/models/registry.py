"""Model registry: build any encoder or head by name, e.g. from a config string.

Example:
  >>> from flax import nnx
  >>> from jaxcl import models
  >>> encoder = models.create("resnet18", stem="small", in_channels=1, rngs=nnx.Rngs(0))
  >>> head = models.create("simclr_v2_projection", in_features=encoder.num_features,
  ...                      rngs=nnx.Rngs(1))
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from flax import nnx

from jaxcl.models import heads, resnet, vit

_REGISTRY: dict[str, Callable[..., nnx.Module]] = {
    "resnet10": resnet.resnet10,
    "resnet18": resnet.resnet18,
    "resnet34": resnet.resnet34,
    "resnet50": resnet.resnet50,
    "resnet101": resnet.resnet101,
    "resnet152": resnet.resnet152,
    "resnet_tiny": resnet.resnet_tiny,
    "vit_tiny": vit.vit_tiny,
    "vit_small": vit.vit_small,
    "vit_base": vit.vit_base,
    "simclr_v1_projection": heads.SimCLRv1Projection,
    # MoCo v2's MLP head is the SimCLR v1 head (Linear-ReLU-Linear with biases).
    "mocov2_projection": heads.SimCLRv1Projection,
    "simclr_v2_projection": heads.SimCLRv2Projection,
    "mocov3_projector": heads.MoCoV3Projector,
    "mocov3_predictor": heads.MoCoV3Predictor,
    "linear_classifier": heads.LinearClassifier,
}

#: The names that build encoders (images to features); the rest are heads.
ENCODER_NAMES = tuple(
    sorted(
        name
        for name, build in _REGISTRY.items()
        if build.__module__ in (resnet.__name__, vit.__name__)
    )
)


def available() -> list[str]:
    """Returns the names `create` accepts, sorted.

    Returns:
      A list of model names such as 'resnet50' or 'simclr_v2_projection'.
    """
    return sorted(_REGISTRY)


def create(name: str, *, rngs: nnx.Rngs, **options) -> nnx.Module:
    """Creates a registered model.

    Args:
      name: one of `available()`: encoders (`ENCODER_NAMES`) 'resnet10',
        'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152',
        'resnet_tiny' (for tests), 'vit_tiny', 'vit_small', 'vit_base'; heads
        'simclr_v1_projection', 'mocov2_projection' (same class), 'simclr_v2_projection',
        'mocov3_projector',
        'mocov3_predictor', 'linear_classifier'.
      rngs: random number generators for parameter initialization.
      **options: keyword arguments of the model's constructor. Encoders: stem,
        in_channels, width_multiplier, zero_init_residual, bn_axis_name, dtype (see
        `jaxcl.models.ResNet`); ViTs: patch_size, in_channels, position_embedding,
        image_size, frozen_patch_embedding, drop_path_rate, dtype, ... (see
        `jaxcl.models.VisionTransformer`). Heads: in_features (required except for the
        predictor), hidden_features, out_features or num_classes, bn_axis_name,
        dtype.

    Returns:
      The model, with BatchNorm layers in training mode.

    Raises:
      ValueError: if `name` is not registered, an option is not the model's,
        or an option's value is invalid.
    """
    if name not in _REGISTRY:
        heads = sorted(set(_REGISTRY) - set(ENCODER_NAMES))
        raise ValueError(
            f"unknown model {name!r}; encoders: {', '.join(ENCODER_NAMES)}; "
            f"heads: {', '.join(heads)}"
        )
    build = _REGISTRY[name]
    accepted = _keyword_options(build)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"{name} has no option(s) {', '.join(unknown)}; its options: "
            f"{', '.join(sorted(accepted - {'rngs'}))}"
        )
    return build(rngs=rngs, **options)


def _keyword_options(build: Callable) -> set[str]:
    """The keyword arguments a model's builder takes (a class's are its ``__init__``'s)."""
    function = build.__init__ if isinstance(build, type) else build
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        # resnet18 & co. forward **options to ResNet, vit_small & co. to VisionTransformer.
        if build.__module__ == vit.__name__:
            return _keyword_options(vit.VisionTransformer)
        return _keyword_options(resnet.ResNet) - {"block", "stage_sizes"}
    return {p.name for p in parameters if p.name != "self"}
