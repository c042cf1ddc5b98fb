"""Building blocks shared by the encoders and heads: BatchNorm, conv and dense factories.

Every model in `jaxcl.models` builds its layers through these factories so that the
conventions of the reference implementations hold in one place:

* BatchNorm momentum 0.9 and epsilon 1e-5, as in the official SimCLR code (BN decay
  0.9) and PyTorch (eps 1e-5). Flax's own defaults (0.99, 1e-5) average the running
  statistics over a much longer window, which makes evaluation early in training
  disagree with the references.
* Parameters are always float32 (`param_dtype`); `dtype` only sets the compute dtype
  of activations, so bfloat16 training keeps float32 master weights.
* Optional cross-device ("global") BatchNorm through `axis_name`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

#: Running-statistics momentum of every BatchNorm (SimCLR's BN decay 0.9).
BATCH_NORM_MOMENTUM = 0.9
#: Variance epsilon of every BatchNorm (PyTorch and SimCLR value).
BATCH_NORM_EPSILON = 1e-5

Dtype = Any

# Kaiming-normal with fan_out, the initializer torchvision applies to every ResNet
# conv (He et al. 2015); untruncated normal as in torch.nn.init.kaiming_normal_.
conv_kernel_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")

# PyTorch's nn.Linear default (kaiming_uniform with a=sqrt(5)) is U(-1/sqrt(fan_in),
# 1/sqrt(fan_in)), i.e. variance 1/(3 fan_in). The MoCo and solo-learn heads that
# users compare against rely on it.
dense_kernel_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class BatchNorm(nnx.BatchNorm):
    """`nnx.BatchNorm` with a trace-time fix, one fused collective and float32 statistics.

    Same variables (`scale`, `bias`, `mean`, `var`), constructor, `use_running_average`
    flag and `nnx.view` / `train()` / `eval()` behaviour as `nnx.BatchNorm`; only the
    forward pass is rewritten, for three reasons:

    * Tracing time. `nnx.BatchNorm` stores its running statistics with
      `variable[...] = value`, which probes `value.sharding`; on a tracer JAX 0.10
      answers with an error message that walks every equation traced so far, so
      tracing a model is quadratic in its number of BatchNorm layers (ResNet-152 took
      7 s of CPU to trace instead of under 1 s). See jax-ml/jax#40041. Storing with
      `Variable.set_value` skips the probe.
    * Global BatchNorm in one collective: the per-device mean and mean of squares
      are averaged over `axis_name` with a single `lax.pmean`, as SimCLR's
      cross-replica BatchNorm does (variance = E[x^2] - E[x]^2, biased).
    * Precision: statistics are reduced and normalization is computed in (at least)
      float32 whatever the compute dtype; only the output is cast to `dtype`.
    """

    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        """Normalizes `x` over every axis but the last.

        Args:
          x: activations whose last axis has `num_features` channels.
          use_running_average: overrides the module's flag for this call.

        Returns:
          The normalized, scaled and shifted activations in the compute dtype.
        """
        if use_running_average is None:
            use_running_average = self.use_running_average
        stats_dtype = jnp.promote_types(x.dtype, jnp.float32)
        x32 = x.astype(stats_dtype)
        if use_running_average:
            mean = self.mean.get_value().astype(stats_dtype)
            var = self.var.get_value().astype(stats_dtype)
        else:
            axes = tuple(range(x.ndim - 1))
            moments = jnp.stack([jnp.mean(x32, axes), jnp.mean(jnp.square(x32), axes)])
            if self.axis_name is not None:
                moments = jax.lax.pmean(moments, self.axis_name)
            mean, mean_of_squares = moments[0], moments[1]
            # E[x^2] - E[x]^2 can round to a tiny negative number.
            var = jnp.maximum(mean_of_squares - jnp.square(mean), 0.0)
            # Running averages are state, not something to differentiate through.
            momentum = self.momentum
            self.mean.set_value(
                jax.lax.stop_gradient(momentum * self.mean.get_value() + (1 - momentum) * mean)
            )
            self.var.set_value(
                jax.lax.stop_gradient(momentum * self.var.get_value() + (1 - momentum) * var)
            )
        multiplier = jax.lax.rsqrt(var + self.epsilon)
        if self.scale is not None:
            multiplier = multiplier * self.scale.get_value().astype(stats_dtype)
        y = (x32 - mean) * multiplier
        if self.bias is not None:
            y = y + self.bias.get_value().astype(stats_dtype)
        return y.astype(x.dtype if self.dtype is None else self.dtype)


def batch_norm(
    num_features: int,
    *,
    axis_name: str | None = None,
    dtype: Dtype = jnp.float32,
    use_scale: bool = True,
    use_bias: bool = True,
    zero_scale: bool = False,
    rngs: nnx.Rngs,
) -> BatchNorm:
    """Creates a BatchNorm with the jaxcl conventions (momentum 0.9, epsilon 1e-5).

    Batch statistics are always reduced in float32 (Flax promotes the reduction to at
    least float32) and the running mean/variance variables are float32, whatever the
    compute dtype. Like Flax and the TF SimCLR code, the running variance is the
    biased batch variance (PyTorch stores the unbiased one; the difference is
    n/(n-1), negligible at contrastive batch sizes).

    Args:
      num_features: number of channels (last axis).
      axis_name: mesh axis over which batch statistics are averaged when the model
        runs inside `jax.shard_map` (global BatchNorm, as in SimCLR's cross-replica
        BN). None for per-device statistics, or under plain `jax.jit` with sharded
        inputs, where XLA already computes statistics over the global batch.
      dtype: compute dtype of the normalized output.
      use_scale: whether to learn a scale (gamma).
      use_bias: whether to learn a bias (beta).
      zero_scale: initialize gamma to zero (used for `zero_init_residual`).
      rngs: random number generators (unused by BatchNorm itself, required by nnx).

    Returns:
      A `BatchNorm` (an `nnx.BatchNorm`) in training mode; switch with
      `module.eval()` / `module.train()` or use `jaxcl.models.functional.apply`.
    """
    return BatchNorm(
        num_features,
        momentum=BATCH_NORM_MOMENTUM,
        epsilon=BATCH_NORM_EPSILON,
        dtype=dtype,
        param_dtype=jnp.float32,
        use_scale=use_scale,
        use_bias=use_bias,
        scale_init=nnx.initializers.zeros if zero_scale else nnx.initializers.ones,
        axis_name=axis_name,
        rngs=rngs,
    )


def conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    dtype: Dtype = jnp.float32,
    rngs: nnx.Rngs,
) -> nnx.Conv:
    """Creates a bias-free square convolution with PyTorch-style symmetric padding.

    Padding is explicit, `kernel_size // 2` on every side, rather than 'SAME': with
    stride 2 on an even input 'SAME' pads (0, 1) where torchvision pads (1, 1), which
    shifts every downsampled feature map by one pixel relative to the reference.

    Args:
      in_channels: input channels.
      out_channels: output channels.
      kernel_size: side of the square kernel.
      stride: spatial stride.
      dtype: compute dtype.
      rngs: random number generators for the kernel initializer.

    Returns:
      An `nnx.Conv` without bias (it is always followed by BatchNorm, which has one).
    """
    pad = kernel_size // 2
    return nnx.Conv(
        in_channels,
        out_channels,
        (kernel_size, kernel_size),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=conv_kernel_init,
        rngs=rngs,
    )


def dense(
    in_features: int,
    out_features: int,
    *,
    use_bias: bool = True,
    dtype: Dtype = jnp.float32,
    kernel_init: Any = dense_kernel_init,
    rngs: nnx.Rngs,
) -> nnx.Linear:
    """Creates a Linear layer with float32 parameters and PyTorch's default init.

    Args:
      in_features: input features.
      out_features: output features.
      use_bias: whether to add a bias (zero-initialized).
      dtype: compute dtype.
      kernel_init: kernel initializer; PyTorch's nn.Linear default unless given.
      rngs: random number generators.

    Returns:
      An `nnx.Linear`.
    """
    return nnx.Linear(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=kernel_init,
        bias_init=nnx.initializers.zeros,
        rngs=rngs,
    )


def scaled_widths(widths: Sequence[int], multiplier: float) -> tuple[int, ...]:
    """Scales channel widths by a (possibly fractional) width multiplier.

    Args:
      widths: base channel counts.
      multiplier: SimCLR width multiplier (1, 2, 4) or a fraction such as 0.25.

    Returns:
      The rounded widths, each at least 1.

    Raises:
      ValueError: if the multiplier is not positive.
    """
    if multiplier <= 0:
        raise ValueError(f"width_multiplier must be positive, got {multiplier}")
    return tuple(max(1, round(width * multiplier)) for width in widths)
