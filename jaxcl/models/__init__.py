"""Encoders (ResNets and Vision Transformers) and heads of the contrastive methods, in NNX.

Build models by name with `create`, or from the classes directly; run them in a
jitted step through the pure functions of `jaxcl.models.functional`.

Example:
  >>> from flax import nnx
  >>> from jaxcl import models
  >>> encoder = models.create("resnet18", stem="small", in_channels=1, rngs=nnx.Rngs(0))
  >>> encoder.num_features
  128
"""

from jaxcl.models import functional
from jaxcl.models.heads import (
    LinearClassifier,
    MoCoV3Predictor,
    MoCoV3Projector,
    SimCLRv1Projection,
    SimCLRv2Projection,
)
from jaxcl.models.layers import BATCH_NORM_EPSILON, BATCH_NORM_MOMENTUM
from jaxcl.models.registry import ENCODER_NAMES, available, create
from jaxcl.models.resnet import (
    BasicBlock,
    Bottleneck,
    ResNet,
    ResNetStage,
    resnet10,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnet_tiny,
)
from jaxcl.models.vit import FrozenParam, VisionTransformer, vit_base, vit_small, vit_tiny

__all__ = [
    "BATCH_NORM_EPSILON",
    "BATCH_NORM_MOMENTUM",
    "ENCODER_NAMES",
    "BasicBlock",
    "Bottleneck",
    "FrozenParam",
    "LinearClassifier",
    "MoCoV3Predictor",
    "MoCoV3Projector",
    "ResNet",
    "ResNetStage",
    "SimCLRv1Projection",
    "SimCLRv2Projection",
    "VisionTransformer",
    "available",
    "create",
    "functional",
    "resnet10",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet_tiny",
    "vit_base",
    "vit_small",
    "vit_tiny",
]
