"""Projection heads, predictors and the linear classifier of the contrastive methods.

Every head takes float features of shape (N, in_features) and returns float32 outputs
of shape (N, out_features). Heads with BatchNorm accept `bn_axis_name` for global
BatchNorm under `jax.shard_map` and start in training mode, like the encoders.

Where the papers and their code disagree, the code is followed and the choice is
stated in the class docstring.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcl.models.layers import Dtype, batch_norm, dense


def _add_dense_bn_layers(
    head: nnx.Module,
    indices: range,
    in_features: int,
    hidden_features: int,
    out_features: int,
    *,
    last_bn_scale: bool,
    bn_axis_name: str | None,
    dtype: Dtype,
    rngs: nnx.Rngs,
) -> None:
    """Sets ``dense{i}`` (no bias) and ``bn{i}`` on ``head`` for each i of ``indices``.

    Hidden BatchNorms are affine; the last one has no bias (the projection is
    centred), and a scale only when ``last_bn_scale`` (SimCLR v2 keeps it, MoCo
    v3 drops it).
    """
    width = in_features
    for index in indices:
        last = index == indices[-1]
        out = out_features if last else hidden_features
        setattr(head, f"dense{index}", dense(width, out, use_bias=False, dtype=dtype, rngs=rngs))
        norm = batch_norm(
            out,
            axis_name=bn_axis_name,
            dtype=dtype,
            use_scale=last_bn_scale or not last,
            use_bias=not last,
            rngs=rngs,
        )
        setattr(head, f"bn{index}", norm)
        width = out


def _apply_dense_bn_layers(head: nnx.Module, indices: range, features: jax.Array) -> jax.Array:
    """The layers set by `_add_dense_bn_layers`, with a ReLU after each but the last."""
    x = features
    for index in indices:
        x = getattr(head, f"bn{index}")(getattr(head, f"dense{index}")(x))
        if index != indices[-1]:
            x = nnx.relu(x)
    return x.astype(jnp.float32)


class SimCLRv1Projection(nnx.Module):
    """SimCLR v1 projection head g(h): Linear-ReLU-Linear, with biases.

    As described in SimCLR (Chen et al. 2020, arXiv:2002.05709, Section 2.1):
    z = W2 relu(W1 h), hidden width = input width, output 128. This is also the MoCo
    v2 MLP head (Chen et al. 2020, arXiv:2003.04297: 2048-2048-128, biases, no
    BatchNorm), registered as 'mocov2_projection'. The official SimCLR v1 TF code adds
    BatchNorm inside the head; use `SimCLRv2Projection(num_layers=2)` for that variant.

    Attributes:
      out_features: size of the projection.
    """

    def __init__(
        self,
        in_features: int,
        *,
        hidden_features: int | None = None,
        out_features: int = 128,
        bn_axis_name: str | None = None,
        dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        """Creates the head.

        Args:
          in_features: size of the encoder features h.
          hidden_features: hidden width; defaults to `in_features`.
          out_features: projection size (128 in SimCLR and MoCo v2).
          bn_axis_name: accepted for a uniform interface; this head has no BatchNorm.
          dtype: compute dtype.
          rngs: random number generators.
        """
        del bn_axis_name  # No BatchNorm here.
        hidden_features = in_features if hidden_features is None else hidden_features
        self.out_features = out_features
        self.dense1 = dense(in_features, hidden_features, dtype=dtype, rngs=rngs)
        self.dense2 = dense(hidden_features, out_features, dtype=dtype, rngs=rngs)

    def __call__(self, features: jax.Array) -> jax.Array:
        """Projects features of shape (N, in_features) to float32 (N, out_features)."""
        x = nnx.relu(self.dense1(features))
        return self.dense2(x).astype(jnp.float32)


class SimCLRv2Projection(nnx.Module):
    """SimCLR v2 projection head: deeper MLP with BatchNorm after every Linear.

    Following the official SimCLR v2 code (Chen et al. 2020, "Big Self-Supervised
    Models are Strong Semi-Supervised Learners", arXiv:2006.10029; `ProjectionHead`
    with `num_proj_layers=3`): each hidden layer is Linear (no bias, since BatchNorm
    follows) - BatchNorm (scale and bias) - ReLU; the last layer is Linear (no bias) -
    BatchNorm with a learned scale but no bias (`center=False` in the TF code), and no
    ReLU. Hidden width defaults to the input width, output to 128.

    Attributes:
      num_layers: number of Linear layers.
      out_features: size of the projection.
    """

    def __init__(
        self,
        in_features: int,
        *,
        hidden_features: int | None = None,
        out_features: int = 128,
        num_layers: int = 3,
        bn_axis_name: str | None = None,
        dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        """Creates the head.

        Args:
          in_features: size of the encoder features h.
          hidden_features: width of the hidden layers; defaults to `in_features`.
          out_features: projection size.
          num_layers: number of Linear layers (3 in SimCLR v2, at least 1).
          bn_axis_name: mesh axis for global BatchNorm under `jax.shard_map`.
          dtype: compute dtype.
          rngs: random number generators.
        """
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        hidden_features = in_features if hidden_features is None else hidden_features
        self.num_layers = num_layers
        self.out_features = out_features
        _add_dense_bn_layers(
            self, range(num_layers), in_features, hidden_features, out_features,
            last_bn_scale=True, bn_axis_name=bn_axis_name, dtype=dtype, rngs=rngs,
        )  # fmt: skip

    def __call__(self, features: jax.Array) -> jax.Array:
        """Projects features of shape (N, in_features) to float32 (N, out_features)."""
        return _apply_dense_bn_layers(self, range(self.num_layers), features)


class MoCoV3Projector(nnx.Module):
    """MoCo v3 projector: (Linear-BN-ReLU) x (num_layers - 1), Linear-BN, no biases.

    Following the official MoCo v3 code (Chen, Xie, He 2021, arXiv:2104.02057;
    `_build_mlp(2, 2048, 4096, 256)` after a ResNet, `_build_mlp(3, width, 4096, 256)`
    after a ViT): Linear layers have no bias, the hidden BatchNorms are affine and
    the last BatchNorm has neither scale nor bias (`affine=False`; the authors dropped
    SimCLR's gamma "for simplicity"). Defaults: 2 layers, hidden 4096, output 256.
    Layers are named `dense1`, `bn1`, `dense2`, `bn2`, ...

    Attributes:
      num_layers: number of Linear layers.
      out_features: size of the projection.
    """

    def __init__(
        self,
        in_features: int,
        *,
        hidden_features: int = 4096,
        out_features: int = 256,
        num_layers: int = 2,
        bn_axis_name: str | None = None,
        dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        """Creates the projector.

        Args:
          in_features: size of the encoder features.
          hidden_features: hidden width (4096 in MoCo v3).
          out_features: output size (256 in MoCo v3).
          num_layers: Linear layers: 2 after a ResNet, 3 after a ViT (MoCo v3).
          bn_axis_name: mesh axis for global BatchNorm under `jax.shard_map`.
          dtype: compute dtype.
          rngs: random number generators.

        Raises:
          ValueError: if num_layers < 1.
        """
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        self.num_layers = num_layers
        self.out_features = out_features
        _add_dense_bn_layers(
            self, range(1, num_layers + 1), in_features, hidden_features, out_features,
            last_bn_scale=False, bn_axis_name=bn_axis_name, dtype=dtype, rngs=rngs,
        )  # fmt: skip

    def __call__(self, features: jax.Array) -> jax.Array:
        """Projects features of shape (N, in_features) to float32 (N, out_features)."""
        return _apply_dense_bn_layers(self, range(1, self.num_layers + 1), features)


class MoCoV3Predictor(nnx.Module):
    """MoCo v3 predictor: Linear-BN-ReLU-Linear, no biases, no final BatchNorm.

    Following the official MoCo v3 code (arXiv:2104.02057;
    `_build_mlp(2, 256, 4096, 256, last_bn=False)` for ResNet): the predictor sits on
    the query branch only and maps projections to predictions of the momentum
    encoder's projections. Defaults: input 256, hidden 4096, output 256.

    Attributes:
      out_features: size of the prediction.
    """

    def __init__(
        self,
        in_features: int = 256,
        *,
        hidden_features: int = 4096,
        out_features: int = 256,
        bn_axis_name: str | None = None,
        dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        """Creates the predictor.

        Args:
          in_features: size of the projections it takes (256 in MoCo v3).
          hidden_features: hidden width (4096 in MoCo v3).
          out_features: output size (256 in MoCo v3).
          bn_axis_name: mesh axis for global BatchNorm under `jax.shard_map`.
          dtype: compute dtype.
          rngs: random number generators.
        """
        self.out_features = out_features
        self.dense1 = dense(in_features, hidden_features, use_bias=False, dtype=dtype, rngs=rngs)
        self.bn1 = batch_norm(hidden_features, axis_name=bn_axis_name, dtype=dtype, rngs=rngs)
        self.dense2 = dense(hidden_features, out_features, use_bias=False, dtype=dtype, rngs=rngs)

    def __call__(self, projections: jax.Array) -> jax.Array:
        """Maps projections of shape (N, in_features) to float32 (N, out_features)."""
        x = nnx.relu(self.bn1(self.dense1(projections)))
        return self.dense2(x).astype(jnp.float32)


class LinearClassifier(nnx.Module):
    """Linear classifier for linear evaluation (a linear probe on frozen features).

    Weights are drawn from N(0, 0.01^2) and biases start at zero, as in the linear
    evaluation code of both SimCLR and MoCo.

    Attributes:
      num_classes: number of output logits.
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        bn_axis_name: str | None = None,
        dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        """Creates the classifier.

        Args:
          in_features: size of the (frozen) encoder features.
          num_classes: number of classes.
          bn_axis_name: accepted for a uniform interface; there is no BatchNorm.
          dtype: compute dtype.
          rngs: random number generators.
        """
        del bn_axis_name  # No BatchNorm here.
        self.num_classes = num_classes
        self.dense = dense(
            in_features,
            num_classes,
            dtype=dtype,
            kernel_init=nnx.initializers.normal(stddev=0.01),
            rngs=rngs,
        )

    def __call__(self, features: jax.Array) -> jax.Array:
        """Returns float32 logits of shape (N, num_classes)."""
        return self.dense(features).astype(jnp.float32)
