"""ResNet encoders (He et al. 2016) in Flax NNX, torchvision-style, for contrastive learning.

The architecture follows torchvision's ResNet ("v1.5"):

* BasicBlock (two 3x3 convs) for ResNet-18/34, Bottleneck (1x1, 3x3, 1x1 with
  expansion 4) for ResNet-50/101/152, with the stride of a downsampling bottleneck on
  the 3x3 conv rather than the first 1x1 conv.
* A 1x1 conv + BatchNorm projection shortcut wherever the shape changes, identity
  otherwise; convolutions have no bias.
* Kaiming-normal (fan_out) conv init, BatchNorm gamma 1 and beta 0, optionally gamma 0
  on the last BatchNorm of every residual block (`zero_init_residual`, Goyal et al.
  2017), as torchvision's flag of the same name.

Two things differ from torchvision, both taken from SimCLR (Chen et al. 2020,
arXiv:2002.05709, and its official TF code):

* `width_multiplier` scales every width, stem included, as SimCLR's ResNet-50 (2x)
  and (4x) do (torchvision's wide_resnet50_2 only widens the bottleneck interior).
  Fractional values such as 0.25 give the small CPU models.
* `stem='small'` replaces the 7x7 stride-2 conv and max-pool by one 3x3 stride-1 conv,
  SimCLR's CIFAR-10 variant, for 28-96 pixel images (CIFAR, STL-10, Fashion-MNIST).

The encoder has no classifier: it returns globally average-pooled features of shape
(N, num_features) in float32, the representation h of SimCLR on which projection heads
and linear probes are built.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcl.models.layers import Dtype, batch_norm, conv, scaled_widths

#: Stage sizes (blocks per stage) and block type of the standard depths.
RESNET_DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}

#: Channel widths of the four stages of a standard ResNet at width 1x.
RESNET_BASE_WIDTHS = (64, 128, 256, 512)

STEMS = ("imagenet", "small")
STEM_POOL_PADDINGS = ("symmetric", "same")


class BasicBlock(nnx.Module):
    """Two 3x3 conv-BN layers with a residual connection (ResNet-18/34 block).

    Reference: He et al. 2016, "Deep Residual Learning for Image Recognition",
    arXiv:1512.03385, Figure 5 left; torchvision.models.resnet.BasicBlock.

    Attributes:
      expansion: ratio of output to inner channels (1).
      out_channels: channels of the block's output.
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        stride: int = 1,
        zero_init_residual: bool = False,
        bn_axis_name: str | None = None,
        dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        """Creates the block.

        Args:
          in_channels: channels of the input.
          channels: channels of both convs and of the output.
          stride: stride of the first 3x3 conv (2 when the stage downsamples).
          zero_init_residual: zero-init the gamma of the last BatchNorm so the block
            starts as its shortcut.
          bn_axis_name: mesh axis for global BatchNorm under `jax.shard_map`.
          dtype: compute dtype.
          rngs: random number generators.
        """
        self.out_channels = channels * self.expansion
        self.conv1 = conv(in_channels, channels, 3, stride=stride, dtype=dtype, rngs=rngs)
        self.bn1 = batch_norm(channels, axis_name=bn_axis_name, dtype=dtype, rngs=rngs)
        self.conv2 = conv(channels, channels, 3, dtype=dtype, rngs=rngs)
        self.bn2 = batch_norm(
            channels,
            axis_name=bn_axis_name,
            dtype=dtype,
            zero_scale=zero_init_residual,
            rngs=rngs,
        )
        self.shortcut_conv, self.shortcut_bn = _projection_shortcut(
            in_channels, self.out_channels, stride, bn_axis_name, dtype, rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the block to NHWC activations.

        Args:
          x: activations of shape (N, H, W, in_channels).

        Returns:
          Activations of shape (N, ceil(H / stride), ceil(W / stride), out_channels).
        """
        shortcut = x
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_bn(self.shortcut_conv(x))
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return nnx.relu(y + shortcut)

    @property
    def last_batch_norm(self) -> nnx.BatchNorm:
        """The BatchNorm whose gamma `zero_init_residual` sets to zero."""
        return self.bn2


class Bottleneck(nnx.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4) conv-BN layers with a residual connection.

    The stride sits on the 3x3 conv, as in torchvision ("ResNet v1.5") and the SimCLR
    code, not on the first 1x1 conv as in the original paper; it is about 0.5% more
    accurate on ImageNet for the same parameter count.

    Reference: He et al. 2016, arXiv:1512.03385, Figure 5 right;
    torchvision.models.resnet.Bottleneck.

    Attributes:
      expansion: ratio of output to inner channels (4).
      out_channels: channels of the block's output.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        stride: int = 1,
        zero_init_residual: bool = False,
        bn_axis_name: str | None = None,
        dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        """Creates the block.

        Args:
          in_channels: channels of the input.
          channels: inner (bottleneck) channels; the output has 4x as many.
          stride: stride of the 3x3 conv (2 when the stage downsamples).
          zero_init_residual: zero-init the gamma of the last BatchNorm so the block
            starts as its shortcut.
          bn_axis_name: mesh axis for global BatchNorm under `jax.shard_map`.
          dtype: compute dtype.
          rngs: random number generators.
        """
        self.out_channels = channels * self.expansion
        self.conv1 = conv(in_channels, channels, 1, dtype=dtype, rngs=rngs)
        self.bn1 = batch_norm(channels, axis_name=bn_axis_name, dtype=dtype, rngs=rngs)
        self.conv2 = conv(channels, channels, 3, stride=stride, dtype=dtype, rngs=rngs)
        self.bn2 = batch_norm(channels, axis_name=bn_axis_name, dtype=dtype, rngs=rngs)
        self.conv3 = conv(channels, self.out_channels, 1, dtype=dtype, rngs=rngs)
        self.bn3 = batch_norm(
            self.out_channels,
            axis_name=bn_axis_name,
            dtype=dtype,
            zero_scale=zero_init_residual,
            rngs=rngs,
        )
        self.shortcut_conv, self.shortcut_bn = _projection_shortcut(
            in_channels, self.out_channels, stride, bn_axis_name, dtype, rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the block to NHWC activations.

        Args:
          x: activations of shape (N, H, W, in_channels).

        Returns:
          Activations of shape (N, ceil(H / stride), ceil(W / stride), 4 * channels).
        """
        shortcut = x
        if self.shortcut_conv is not None:
            shortcut = self.shortcut_bn(self.shortcut_conv(x))
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = nnx.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return nnx.relu(y + shortcut)

    @property
    def last_batch_norm(self) -> nnx.BatchNorm:
        """The BatchNorm whose gamma `zero_init_residual` sets to zero."""
        return self.bn3


_BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "basic": BasicBlock,
    "bottleneck": Bottleneck,
}


def _projection_shortcut(
    in_channels: int,
    out_channels: int,
    stride: int,
    bn_axis_name: str | None,
    dtype: Dtype,
    rngs: nnx.Rngs,
) -> tuple[nnx.Conv | None, nnx.BatchNorm | None]:
    """Returns the 1x1 conv + BN shortcut when the shape changes, else (None, None).

    This is option (B) of He et al. 2016: projections only where needed, identity
    elsewhere, which is what torchvision and SimCLR use.
    """
    if stride == 1 and in_channels == out_channels:
        return None, None
    projection = conv(in_channels, out_channels, 1, stride=stride, dtype=dtype, rngs=rngs)
    norm = batch_norm(out_channels, axis_name=bn_axis_name, dtype=dtype, rngs=rngs)
    return projection, norm


class ResNetStage(nnx.Module):
    """A sequence of residual blocks of one width; the first block may downsample.

    Blocks are attributes named `block0`, `block1`, ... rather than an `nnx.List`, so
    that parameter trees have string keys only (`layer2/block0/conv1/kernel`), which
    checkpoints and optimizer masks handle without surprises.

    Attributes:
      num_blocks: number of blocks.
      out_channels: channels of the stage's output.
    """

    def __init__(
        self,
        block: str,
        num_blocks: int,
        in_channels: int,
        channels: int,
        *,
        stride: int,
        zero_init_residual: bool = False,
        bn_axis_name: str | None = None,
        dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        """Creates the stage.

        Args:
          block: 'basic' or 'bottleneck'.
          num_blocks: number of blocks (at least 1).
          in_channels: channels of the stage's input.
          channels: inner channels of each block.
          stride: stride of the first block.
          zero_init_residual: see `BasicBlock` / `Bottleneck`.
          bn_axis_name: mesh axis for global BatchNorm under `jax.shard_map`.
          dtype: compute dtype.
          rngs: random number generators.
        """
        if num_blocks < 1:
            raise ValueError(f"a ResNet stage needs at least one block, got {num_blocks}")
        block_class = _BLOCKS[block]
        self.num_blocks = num_blocks
        for index in range(num_blocks):
            module = block_class(
                in_channels,
                channels,
                stride=stride if index == 0 else 1,
                zero_init_residual=zero_init_residual,
                bn_axis_name=bn_axis_name,
                dtype=dtype,
                rngs=rngs,
            )
            setattr(self, f"block{index}", module)
            in_channels = module.out_channels
        self.out_channels = in_channels

    def blocks(self) -> list[BasicBlock | Bottleneck]:
        """Returns the blocks in order."""
        return [getattr(self, f"block{index}") for index in range(self.num_blocks)]

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the blocks in order to NHWC activations."""
        for block in self.blocks():
            x = block(x)
        return x


class ResNet(nnx.Module):
    """ResNet encoder returning globally average-pooled features (no classifier).

    Torchvision-style ResNet (see the module docstring) with SimCLR's width multiplier
    and CIFAR stem. BatchNorm layers start in training mode (batch statistics); call
    `model.eval()` for running statistics, or use `jaxcl.models.functional.apply` with
    `train=...` in a jitted step.

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> from jaxcl.models import ResNet
      >>> model = ResNet("basic", (1, 1), base_widths=(8, 16), stem="small",
      ...                rngs=nnx.Rngs(0))
      >>> model(jnp.zeros((2, 28, 28, 3))).shape
      (2, 16)

    Attributes:
      num_features: size of the output feature vector (last stage's channels).
      stage_widths: inner channels of each stage after the width multiplier.
      stem: 'imagenet' or 'small'.
      in_channels: expected channels of the input images.
    """

    def __init__(
        self,
        block: str,
        stage_sizes: Sequence[int],
        *,
        base_widths: Sequence[int] = RESNET_BASE_WIDTHS,
        stem: str = "imagenet",
        stem_width: int | None = None,
        stem_pool_padding: str = "symmetric",
        in_channels: int = 3,
        width_multiplier: float = 1.0,
        zero_init_residual: bool = False,
        bn_axis_name: str | None = None,
        dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        """Creates the encoder.

        Args:
          block: 'basic' (ResNet-18/34) or 'bottleneck' (ResNet-50 and deeper).
          stage_sizes: number of blocks in each stage, e.g. (2, 2, 2, 2). The first
            stage keeps the resolution, every later one halves it.
          base_widths: inner channels of each stage at width 1x; one per stage.
          stem: 'imagenet' (7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max-pool:
            downsamples by 4) or 'small' (3x3 stride-1 conv, BN, ReLU, no pooling:
            SimCLR's CIFAR-10 stem for small images).
          stem_width: channels of the stem conv at width 1x; defaults to
            `base_widths[0]` (64 for the standard depths).
          stem_pool_padding: padding of the ImageNet stem's max-pool:
            'symmetric' (1 pixel on every side, torchvision) or 'same'
            (TensorFlow's SAME: 0 before and 1 after on even inputs, as in
            SimCLR's TF code; for its imported checkpoints).
          in_channels: channels of the input images (3 for RGB, 1 for Fashion-MNIST).
          width_multiplier: scales every width, stem included (SimCLR 1x/2x/4x, or a
            fraction such as 0.25 for CPU-sized models).
          zero_init_residual: zero-init the gamma of the last BatchNorm of every
            residual block, so that each block is its shortcut at initialization
            (Goyal et al. 2017, arXiv:1706.02677; torchvision's flag).
          bn_axis_name: mesh axis name over which BatchNorm statistics are averaged
            when the model runs inside `jax.shard_map` (global BatchNorm, as in
            SimCLR). Leave None for single-device use and under plain `jax.jit`.
          dtype: compute dtype of convolutions and activations (e.g. jnp.bfloat16).
            Parameters stay float32, BatchNorm statistics are reduced and stored in
            float32, and the output features are float32.
          rngs: random number generators for parameter initialization.

        Raises:
          ValueError: on an unknown block or stem, or mismatched widths and stages.
        """
        if block not in _BLOCKS:
            raise ValueError(f"unknown ResNet block {block!r}; valid: {sorted(_BLOCKS)}")
        if stem not in STEMS:
            raise ValueError(f"unknown ResNet stem {stem!r}; valid: {list(STEMS)}")
        if stem_pool_padding not in STEM_POOL_PADDINGS:
            raise ValueError(
                f"stem_pool_padding={stem_pool_padding!r} is unknown; use one of "
                f"{', '.join(STEM_POOL_PADDINGS)}"
            )
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(
                f"in_channels={in_channels!r} must be an integer >= 1; pass the images' "
                "channels (3 for RGB, 1 for grayscale)"
            )
        if not (isinstance(width_multiplier, int | float) and 0 < width_multiplier < math.inf):
            raise ValueError(
                f"width_multiplier={width_multiplier!r} must be a finite number > 0; pass e.g. "
                "1.0 (0.25 for CPU-sized encoders)"
            )
        if not stage_sizes or any(not isinstance(n, int) or n < 1 for n in stage_sizes):
            raise ValueError(
                f"stage_sizes={tuple(stage_sizes)!r} must be integers >= 1; pass e.g. (2, 2, 2, 2)"
            )
        if len(base_widths) != len(stage_sizes):
            raise ValueError(
                f"need one width per stage, got widths {tuple(base_widths)} "
                f"for stages {tuple(stage_sizes)}"
            )
        self.stem = stem
        self.stem_pool_padding = stem_pool_padding
        self.in_channels = in_channels
        self.dtype = dtype
        self.stage_widths = scaled_widths(base_widths, width_multiplier)
        (stem_channels,) = scaled_widths(
            [base_widths[0] if stem_width is None else stem_width], width_multiplier
        )

        stem_kernel, stem_stride = (7, 2) if stem == "imagenet" else (3, 1)
        self.stem_conv = conv(
            in_channels, stem_channels, stem_kernel, stride=stem_stride, dtype=dtype, rngs=rngs
        )
        self.stem_bn = batch_norm(stem_channels, axis_name=bn_axis_name, dtype=dtype, rngs=rngs)

        channels = stem_channels
        self.num_stages = len(stage_sizes)
        for index, (num_blocks, width) in enumerate(
            zip(stage_sizes, self.stage_widths, strict=True)
        ):
            stage = ResNetStage(
                block,
                num_blocks,
                channels,
                width,
                stride=1 if index == 0 else 2,
                zero_init_residual=zero_init_residual,
                bn_axis_name=bn_axis_name,
                dtype=dtype,
                rngs=rngs,
            )
            # torchvision's names (layer1 ... layer4), so weights map one to one.
            setattr(self, f"layer{index + 1}", stage)
            channels = stage.out_channels
        self.num_features = channels

    def stages(self) -> list[ResNetStage]:
        """Returns the stages in order (`layer1`, `layer2`, ...)."""
        return [getattr(self, f"layer{index + 1}") for index in range(self.num_stages)]

    def __call__(self, images: jax.Array) -> jax.Array:
        """Encodes a batch of images.

        Args:
          images: float array of shape (N, H, W, in_channels), NHWC.

        Returns:
          float32 features of shape (N, num_features), averaged over space.

        Raises:
          ValueError: if the input is not NHWC with `in_channels` channels.
        """
        if images.ndim != 4 or images.shape[-1] != self.in_channels:
            raise ValueError(
                f"expected NHWC images with {self.in_channels} channels, got shape {images.shape}"
            )
        x = images.astype(self.dtype)
        x = nnx.relu(self.stem_bn(self.stem_conv(x)))
        if self.stem == "imagenet":
            # torchvision pads the max-pool by 1 on every side (with -inf);
            # TensorFlow's SAME pads only after on even inputs.
            padding = ((1, 1), (1, 1)) if self.stem_pool_padding == "symmetric" else "SAME"
            x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=padding)
        for stage in self.stages():
            x = stage(x)
        # Pool in float32: a bfloat16 mean over 7x7 or 4x4 positions loses digits the
        # contrastive loss (a softmax over cosine similarities) is sensitive to.
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


def _standard_resnet(depth: int, rngs: nnx.Rngs, options: dict) -> ResNet:
    block, stage_sizes = RESNET_DEPTHS[depth]
    return ResNet(block, stage_sizes, rngs=rngs, **options)


def resnet10(*, rngs: nnx.Rngs, **options) -> ResNet:
    """ResNet-10 encoder (BasicBlock, stages 1-1-1-1, 512 features at 1x).

    Half the blocks of ResNet-18. The Fashion-MNIST default trains it with the
    small stem and stage widths 16-32-64-256 (``configs/simclr_fashion_mnist.py``):
    on XLA:CPU its forward+backward at 28x28 is about 4x faster than the
    ResNet-18 of the same widths, which is what lets that recipe train for
    several epochs in minutes (bench/models_forward_backward.py).

    Args:
      rngs: random number generators.
      **options: any keyword argument of `ResNet` except `block` and `stage_sizes`.

    Returns:
      The encoder.
    """
    return _standard_resnet(10, rngs, options)


def resnet18(*, rngs: nnx.Rngs, **options) -> ResNet:
    """ResNet-18 encoder (BasicBlock, stages 2-2-2-2, 512 features at 1x).

    Args:
      rngs: random number generators.
      **options: any keyword argument of `ResNet` except `block` and `stage_sizes`
        (stem, in_channels, width_multiplier, zero_init_residual, bn_axis_name, dtype).

    Returns:
      The encoder; 11,176,512 parameters at 1x with the ImageNet stem and RGB input,
      as torchvision's resnet18 without its fc layer.
    """
    return _standard_resnet(18, rngs, options)


def resnet34(*, rngs: nnx.Rngs, **options) -> ResNet:
    """ResNet-34 encoder (BasicBlock, stages 3-4-6-3, 512 features at 1x).

    Args:
      rngs: random number generators.
      **options: keyword arguments of `ResNet`, see `resnet18`.

    Returns:
      The encoder (21,284,672 parameters at 1x, ImageNet stem, RGB).
    """
    return _standard_resnet(34, rngs, options)


def resnet50(*, rngs: nnx.Rngs, **options) -> ResNet:
    """ResNet-50 encoder (Bottleneck, stages 3-4-6-3, 2048 features at 1x).

    The encoder of the SimCLR, MoCo and BYOL ImageNet results.

    Args:
      rngs: random number generators.
      **options: keyword arguments of `ResNet`, see `resnet18`.

    Returns:
      The encoder (23,508,032 parameters at 1x, ImageNet stem, RGB, as torchvision's
      resnet50 without fc).
    """
    return _standard_resnet(50, rngs, options)


def resnet101(*, rngs: nnx.Rngs, **options) -> ResNet:
    """ResNet-101 encoder (Bottleneck, stages 3-4-23-3, 2048 features at 1x).

    Args:
      rngs: random number generators.
      **options: keyword arguments of `ResNet`, see `resnet18`.

    Returns:
      The encoder (42,500,160 parameters at 1x, ImageNet stem, RGB).
    """
    return _standard_resnet(101, rngs, options)


def resnet152(*, rngs: nnx.Rngs, **options) -> ResNet:
    """ResNet-152 encoder (Bottleneck, stages 3-8-36-3, 2048 features at 1x).

    Args:
      rngs: random number generators.
      **options: keyword arguments of `ResNet`, see `resnet18`.

    Returns:
      The encoder (58,143,808 parameters at 1x, ImageNet stem, RGB).
    """
    return _standard_resnet(152, rngs, options)


def resnet_tiny(*, rngs: nnx.Rngs, **options) -> ResNet:
    """A two-stage, one-BasicBlock-per-stage ResNet of width 8-16 for tests.

    Small stem, 16 output features, a few thousand parameters; it compiles in about a
    second, which is what smoke tests of training loops need. It keeps every feature
    of the full models (projection shortcut, BatchNorm, downsampling stage).

    Args:
      rngs: random number generators.
      **options: keyword arguments of `ResNet` (defaults: block 'basic',
        stage_sizes (1, 1), base_widths (8, 16), stem 'small').

    Returns:
      The encoder.
    """
    options = {
        "block": "basic",
        "stage_sizes": (1, 1),
        "base_widths": (8, 16),
        "stem": "small",
        **options,
    }
    return ResNet(rngs=rngs, **options)
