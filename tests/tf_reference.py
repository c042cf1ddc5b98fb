"""SimCLR's TF2 ResNet, re-written for the import test with the same checkpoint names.

google-research/simclr's `tf2/resnet.py` builds its ResNet from Keras layers kept in
lists; a `tf.train.Checkpoint(model=model)` names each variable by that object path:
`model/resnet_model/initial_conv_relu_max_pool/0/conv2d/kernel`,
`model/resnet_model/block_groups/0/layers/0/conv_relu_dropblock_layers/1/bn/gamma`,
`.../projection_layers/0/conv2d/kernel`, and so on. These `tf.Module`s keep the same
attributes, so their checkpoints have the same keys, and compute what that ResNet
computes in inference mode: fixed padding before strided convs, SAME otherwise,
BatchNorm with epsilon 1e-5, a 3x3 stride-2 SAME max-pool after the stem.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

BATCH_NORM_EPSILON = 1e-5


class Conv2D(tf.Module):
    def __init__(self, kernel):
        super().__init__()
        self.kernel = tf.Variable(kernel)  # HWIO


class Conv2dFixedPadding(tf.Module):
    def __init__(self, rng, in_channels, filters, kernel_size, strides):
        super().__init__()
        fan_in = kernel_size * kernel_size * in_channels
        kernel = rng.normal(size=(kernel_size, kernel_size, in_channels, filters)) * np.sqrt(
            2.0 / fan_in
        )
        self.conv2d = Conv2D(kernel.astype(np.float32))
        self.kernel_size, self.strides = kernel_size, strides

    def __call__(self, x):
        if self.strides > 1:
            total = self.kernel_size - 1
            before = total // 2
            x = tf.pad(x, [[0, 0], [before, total - before], [before, total - before], [0, 0]])
        padding = "VALID" if self.strides > 1 else "SAME"
        return tf.nn.conv2d(x, self.conv2d.kernel, self.strides, padding)


class BatchNorm(tf.Module):
    def __init__(self, rng, channels):
        super().__init__()
        self.gamma = tf.Variable((0.5 + rng.uniform(size=channels)).astype(np.float32))
        self.beta = tf.Variable((0.2 * rng.normal(size=channels)).astype(np.float32))
        self.moving_mean = tf.Variable((0.2 * rng.normal(size=channels)).astype(np.float32))
        self.moving_variance = tf.Variable((0.5 + rng.uniform(size=channels)).astype(np.float32))


class BatchNormRelu(tf.Module):
    def __init__(self, rng, channels, relu=True):
        super().__init__()
        self.bn = BatchNorm(rng, channels)
        self.relu = relu

    def __call__(self, x):
        bn = self.bn
        x = tf.nn.batch_normalization(
            x, bn.moving_mean, bn.moving_variance, bn.beta, bn.gamma, BATCH_NORM_EPSILON
        )
        return tf.nn.relu(x) if self.relu else x


class Passthrough(tf.Module):
    """Stands for the layers without variables (IdentityLayer, DropBlock)."""

    def __call__(self, x):
        return x


class MaxPool(tf.Module):
    def __call__(self, x):
        return tf.nn.max_pool2d(x, 3, 2, "SAME")


class BottleneckBlock(tf.Module):
    def __init__(self, rng, in_channels, filters, strides, use_projection):
        super().__init__()
        self.projection_layers = []
        if use_projection:
            self.projection_layers = [
                Conv2dFixedPadding(rng, in_channels, 4 * filters, 1, strides),
                BatchNormRelu(rng, 4 * filters, relu=False),
            ]
        self.conv_relu_dropblock_layers = [
            Conv2dFixedPadding(rng, in_channels, filters, 1, 1),
            BatchNormRelu(rng, filters),
            Passthrough(),
            Conv2dFixedPadding(rng, filters, filters, 3, strides),
            BatchNormRelu(rng, filters),
            Passthrough(),
            Conv2dFixedPadding(rng, filters, 4 * filters, 1, 1),
            BatchNormRelu(rng, 4 * filters, relu=False),
            Passthrough(),
        ]

    def __call__(self, x):
        shortcut = x
        for layer in self.projection_layers:
            shortcut = layer(shortcut)
        for layer in self.conv_relu_dropblock_layers:
            x = layer(x)
        return tf.nn.relu(x + shortcut)


class BlockGroup(tf.Module):
    def __init__(self, rng, in_channels, filters, num_blocks, strides):
        super().__init__()
        self.layers = [BottleneckBlock(rng, in_channels, filters, strides, use_projection=True)]
        for _ in range(1, num_blocks):
            self.layers.append(BottleneckBlock(rng, 4 * filters, filters, 1, False))

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class Resnet(tf.Module):
    """SimCLR's ResNet (sk_ratio 0) at `width_multiplier`, returning pooled features."""

    def __init__(self, seed=0, layers=(3, 4, 6, 3), width_multiplier=1):
        super().__init__()
        rng = np.random.default_rng(seed)
        width = 64 * width_multiplier
        self.initial_conv_relu_max_pool = [
            Conv2dFixedPadding(rng, 3, width, 7, 2),
            Passthrough(),  # IdentityLayer(name='initial_conv')
            BatchNormRelu(rng, width),
            MaxPool(),
            Passthrough(),  # IdentityLayer(name='initial_max_pool')
        ]
        self.block_groups = []
        channels = width
        for index, num_blocks in enumerate(layers):
            filters = width * 2**index
            strides = 1 if index == 0 else 2
            self.block_groups.append(BlockGroup(rng, channels, filters, num_blocks, strides))
            channels = 4 * filters

    def __call__(self, x):
        for layer in self.initial_conv_relu_max_pool:
            x = layer(x)
        for group in self.block_groups:
            x = group(x)
        return tf.reduce_mean(x, axis=[1, 2])  # final_avg_pool


class Model(tf.Module):
    """The root SimCLR's run.py checkpoints as `model`."""

    def __init__(self, **resnet_options):
        super().__init__()
        self.resnet_model = Resnet(**resnet_options)
