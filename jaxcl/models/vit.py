"""Vision Transformer encoders (Dosovitskiy et al. 2021) in Flax NNX, as MoCo v3 trains them.

The architecture is timm's `VisionTransformer` as configured by MoCo v3 (Chen, Xie,
He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers",
arXiv:2104.02057, and facebookresearch/moco-v3's `vits.py`):

* a patch embedding (a `patch_size` x `patch_size` convolution with stride
  `patch_size` and a bias), a class token, and position embeddings added to the
  patch tokens;
* pre-norm blocks: `x + attn(norm1(x))`, `x + mlp(norm2(x))`, LayerNorm epsilon
  1e-6, multi-head self-attention with a bias on the fused qkv projection, an MLP
  of ratio 4 with exact (erf) GELU, optional stochastic depth (drop-path);
* a final LayerNorm; the features are the normalised class token, the input of
  timm's classifier head.

Position embeddings are MoCo v3's fixed 2-D sin-cos embeddings by default, computed
from the patch grid of each call (so one model encodes 28, 32 or 224 pixel images),
or learned ones (timm's and DeiT's) for a fixed `image_size`.

MoCo v3's "stop-gradient patch projection" (`--stop-grad-conv1`; Section 5 of the
paper: a random, fixed patch projection avoids the training instability of the
first layer) is `frozen_patch_embedding=True`: the projection's kernel and bias are
then `FrozenParam` variables, which `jaxcl.models.functional.split` puts with the
non-trained state, so no optimizer (and no weight decay) touches them, exactly as
PyTorch skips parameters with `requires_grad=False`.

Initialisation follows MoCo v3: Xavier-uniform Linear kernels (for the fused qkv
kernel, with the fan-out of one of q, k, v), zero biases, the patch projection
Xavier-uniform over its flattened (in_channels * patch_size**2, width) view, the
class token N(0, 1e-6^2), learned position embeddings truncated N(0, 0.02^2).

Unlike the ResNets, a ViT has no BatchNorm: `batch_stats` holds only the frozen
patch projection (if any), and training and evaluation differ only in drop-path.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcl.models.layers import Dtype

#: Width, depth and heads of the standard sizes. ViT-S has 12 heads as in MoCo v3
#: (DeiT-S has 6; pass num_heads=6 for it); the parameter count is the same.
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 12),
    "base": (768, 12, 12),
}

POSITION_EMBEDDINGS = ("sincos", "learned")

#: LayerNorm epsilon of timm's and MoCo v3's ViTs.
LAYER_NORM_EPSILON = 1e-6


class FrozenParam(nnx.BatchStat):
    """A parameter that is never trained (MoCo v3's frozen random patch projection).

    It subclasses `nnx.BatchStat` because `jaxcl.models.functional.split` carries
    every non-trained array of a model in its `batch_stats` tree: optimizers see only
    `params`, checkpoints and momentum encoders see both.
    """


def _xavier_uniform_fused(num_fused: int) -> nnx.initializers.Initializer:
    """Xavier-uniform for a kernel of `num_fused` side-by-side projections (qkv: 3).

    MoCo v3 initialises the fused qkv Linear as if it were three separate
    (width, width) Linears: bound sqrt(6 / (fan_in + fan_out / 3)).
    """

    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = shape[0], shape[1] // num_fused
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _linear(
    in_features: int,
    out_features: int,
    *,
    dtype: Dtype,
    rngs: nnx.Rngs,
    num_fused: int = 1,
) -> nnx.Linear:
    """A Linear with a bias, float32 parameters and MoCo v3's Xavier-uniform init."""
    return nnx.Linear(
        in_features,
        out_features,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=_xavier_uniform_fused(num_fused),
        bias_init=nnx.initializers.zeros,
        rngs=rngs,
    )


def _layer_norm(width: int, dtype: Dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm with epsilon 1e-6; Flax computes its statistics in float32."""
    return nnx.LayerNorm(
        width, epsilon=LAYER_NORM_EPSILON, dtype=dtype, param_dtype=jnp.float32, rngs=rngs
    )


def sincos_position_embedding(grid_height: int, grid_width: int, width: int) -> jax.Array:
    """MoCo v3's fixed 2-D sin-cos position embedding of a patch grid.

    The first half of the channels encodes a token's row and the second half its
    column, each as [sin(p * omega), cos(p * omega)] with omega = 10000^(-k / (width/4)),
    k = 0 .. width/4 - 1. (MoCo v3 builds the grid with `torch.meshgrid(w, h)`, whose
    'ij' indexing makes its "w" half the row; this keeps that order, so imported MoCo v3
    weights see the embeddings they were trained with.)

    Args:
      grid_height: rows of patches.
      grid_width: columns of patches.
      width: the embedding width, a multiple of 4.

    Returns:
      float32 array of shape (grid_height * grid_width, width), tokens in row-major
      order (the order of the flattened patch grid).

    Raises:
      ValueError: if `width` is not a multiple of 4.
    """
    if width % 4:
        raise ValueError(
            f"width={width} must be a multiple of 4 for 2-D sin-cos position embeddings; "
            "pick another width or position_embedding='learned'"
        )
    quarter = width // 4
    omega = 1.0 / (10000.0 ** (jnp.arange(quarter, dtype=jnp.float32) / quarter))
    rows, columns = jnp.meshgrid(
        jnp.arange(grid_height, dtype=jnp.float32),
        jnp.arange(grid_width, dtype=jnp.float32),
        indexing="ij",
    )
    out_rows = rows.reshape(-1)[:, None] * omega[None, :]
    out_columns = columns.reshape(-1)[:, None] * omega[None, :]
    return jnp.concatenate(
        [jnp.sin(out_rows), jnp.cos(out_rows), jnp.sin(out_columns), jnp.cos(out_columns)],
        axis=1,
    )


class PatchEmbedding(nnx.Module):
    """Splits images into non-overlapping patches and projects each to `width`.

    A `patch_size` x `patch_size` convolution with stride `patch_size` and a bias
    (timm's `PatchEmbed.proj`). With `frozen=True` its kernel and bias are
    `FrozenParam`s (MoCo v3's stop-gradient patch projection).
    """

    def __init__(
        self,
        in_channels: int,
        width: int,
        patch_size: int,
        *,
        frozen: bool = False,
        dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        """Creates the projection.

        Args:
          in_channels: channels of the images.
          width: the token width.
          patch_size: side of a square patch in pixels.
          frozen: keep the random projection fixed (not trained).
          dtype: compute dtype.
          rngs: random number generators.
        """
        self.patch_size = patch_size
        self.dtype = dtype
        fan_in = in_channels * patch_size * patch_size
        bound = math.sqrt(6.0 / (fan_in + width))
        kernel = jax.random.uniform(
            rngs.params(), (patch_size, patch_size, in_channels, width), jnp.float32, -bound, bound
        )
        bias = jnp.zeros((width,), jnp.float32)
        variable = FrozenParam if frozen else nnx.Param
        self.kernel = variable(kernel)
        self.bias = variable(bias)

    def __call__(self, images: jax.Array) -> jax.Array:
        """Returns tokens of shape (N, H / patch_size, W / patch_size, width)."""
        kernel = self.kernel.get_value()
        if isinstance(self.kernel, FrozenParam):
            # Nothing upstream of the first layer is trained, so this only keeps
            # a user's own gradient of the batch_stats tree at zero.
            kernel = jax.lax.stop_gradient(kernel)
        p = self.patch_size
        tokens = jax.lax.conv_general_dilated(
            images.astype(self.dtype),
            kernel.astype(self.dtype),
            window_strides=(p, p),
            padding="VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return tokens + self.bias.get_value().astype(self.dtype)


class SelfAttention(nnx.Module):
    """Multi-head self-attention with a fused qkv projection (timm's `Attention`)."""

    def __init__(self, width: int, num_heads: int, *, dtype: Dtype, rngs: nnx.Rngs):
        """Creates the layer.

        Args:
          width: token width, a multiple of `num_heads`.
          num_heads: attention heads.
          dtype: compute dtype.
          rngs: random number generators.
        """
        self.num_heads = num_heads
        self.qkv = _linear(width, 3 * width, num_fused=3, dtype=dtype, rngs=rngs)
        self.proj = _linear(width, width, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Attends over the tokens of x, shape (N, T, width); returns the same shape."""
        batch, tokens, width = x.shape
        head_width = width // self.num_heads
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, head_width)
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        # Scaled by head_width ** -0.5; XLA's fused attention on GPU, plain ops on CPU.
        attended = jax.nn.dot_product_attention(query, key, value)
        return self.proj(attended.reshape(batch, tokens, width))


class Mlp(nnx.Module):
    """Linear, exact GELU, Linear (timm's `Mlp`)."""

    def __init__(self, width: int, hidden: int, *, dtype: Dtype, rngs: nnx.Rngs):
        """Creates the MLP of `width` -> `hidden` -> `width` features."""
        self.fc1 = _linear(width, hidden, dtype=dtype, rngs=rngs)
        self.fc2 = _linear(hidden, width, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Applies the MLP to the last axis of x."""
        # PyTorch's nn.GELU() default is the exact erf form, not the tanh one.
        return self.fc2(nnx.gelu(self.fc1(x), approximate=False))


class EncoderBlock(nnx.Module):
    """A pre-norm Transformer block with optional drop-path (timm's `Block`).

    Attributes:
      drop_path_rate: probability of dropping each residual branch per example
        while training (stochastic depth, Huang et al. 2016).
    """

    def __init__(
        self,
        width: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        dtype: Dtype,
        rngs: nnx.Rngs,
    ):
        """Creates the block.

        Args:
          width: token width.
          num_heads: attention heads.
          mlp_ratio: hidden width of the MLP over `width`.
          drop_path_rate: drop-path probability of this block.
          dtype: compute dtype.
          rngs: random number generators.
        """
        self.drop_path_rate = drop_path_rate
        self.norm1 = _layer_norm(width, dtype, rngs)
        self.attn = SelfAttention(width, num_heads, dtype=dtype, rngs=rngs)
        self.norm2 = _layer_norm(width, dtype, rngs)
        self.mlp = Mlp(width, int(width * mlp_ratio), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, example_keys: jax.Array | None) -> jax.Array:
        """Applies the block.

        Args:
          x: tokens of shape (N, tokens, width).
          example_keys: this block's PRNG key of each example, shape (N,); None
            when drop-path is off (evaluation).

        Returns:
          The block's output tokens.
        """
        x = x + self._drop_path(self.attn(self.norm1(x)), example_keys, 0)
        return x + self._drop_path(self.mlp(self.norm2(x)), example_keys, 1)

    def _drop_path(self, branch: jax.Array, example_keys: jax.Array | None, salt: int):
        """Zeros the branch of each example with probability drop_path_rate, rescaled.

        Each example's draw depends on its own key only, so a batch split over
        devices drops the same branches as the whole batch on one device.
        """
        if example_keys is None or self.drop_path_rate == 0.0:
            return branch
        keep = 1.0 - self.drop_path_rate
        draw = jax.vmap(lambda key: jax.random.bernoulli(jax.random.fold_in(key, salt), keep))
        mask = draw(example_keys).reshape(-1, 1, 1)
        return branch * (mask.astype(branch.dtype) / keep)


def per_example_keys(rng: jax.Array, batch: int) -> jax.Array:
    """One PRNG key per example: `rng` itself if it holds `batch` keys, else split from it.

    Args:
      rng: one key (typed, shape (); or raw uint32, shape (2,)), or one key per
        example (shape (batch,) typed or (batch, 2) raw).
      batch: the number of examples.

    Returns:
      `batch` keys.
    """
    single_ndim = 0 if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key) else 1
    if rng.ndim == single_ndim + 1:
        if rng.shape[0] != batch:
            raise ValueError(f"rng holds {rng.shape[0]} keys for a batch of {batch} images")
        return rng
    return jax.random.split(rng, batch)


class VisionTransformer(nnx.Module):
    """ViT encoder returning the normalised class token (no classifier head).

    Example:
      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> from jaxcl.models import VisionTransformer
      >>> model = VisionTransformer(width=32, depth=2, num_heads=2, patch_size=4,
      ...                           in_channels=1, rngs=nnx.Rngs(0))
      >>> model(jnp.zeros((2, 28, 28, 1))).shape
      (2, 32)

    Attributes:
      num_features: size of the output feature vector (the width).
      patch_size: side of a patch in pixels.
      in_channels: expected channels of the input images.
      deterministic: False while training (drop-path on), True in evaluation; set
        by `jaxcl.models.functional.apply` and `nnx.view(model, deterministic=...)`.
    """

    def __init__(
        self,
        *,
        width: int,
        depth: int,
        num_heads: int,
        patch_size: int = 16,
        in_channels: int = 3,
        mlp_ratio: float = 4.0,
        position_embedding: str = "sincos",
        image_size: int | None = None,
        frozen_patch_embedding: bool = False,
        drop_path_rate: float = 0.0,
        bn_axis_name: str | None = None,
        dtype: Dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        """Creates the encoder.

        Args:
          width: token width (embedding dimension): 192, 384, 768 for Ti, S, B.
          depth: number of Transformer blocks.
          num_heads: attention heads; `width` must be a multiple.
          patch_size: side of a square patch (16 for 224 pixels, 4 for 28-32).
          in_channels: channels of the input images (3 for RGB, 1 for grayscale).
          mlp_ratio: MLP hidden width over `width` (4).
          position_embedding: 'sincos' (MoCo v3's fixed 2-D embedding, any image
            size) or 'learned' (timm/DeiT; needs `image_size`).
          image_size: side of the square input images; required for learned
            position embeddings, and checked against the input when given.
          frozen_patch_embedding: MoCo v3's stop-gradient patch projection: a
            random patch projection that is never trained.
          drop_path_rate: stochastic depth rate of the last block, rising linearly
            from 0 at the first (timm's schedule); needs a key at training time.
          bn_axis_name: accepted for the uniform encoder interface; a ViT has no
            BatchNorm (its LayerNorms are per token).
          dtype: compute dtype of activations (e.g. jnp.bfloat16); parameters are
            float32 and the output features float32.
          rngs: random number generators for parameter initialization.

        Raises:
          ValueError: on inconsistent sizes or an unknown position embedding.
        """
        del bn_axis_name  # No BatchNorm in a ViT.
        for name, value in (("width", width), ("depth", depth), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if width % num_heads:
            raise ValueError(
                f"width={width} is not a multiple of num_heads={num_heads}; pick num_heads "
                f"among the divisors of {width}"
            )
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(
                f"in_channels={in_channels!r} must be an integer >= 1; pass the images' "
                "channels (3 for RGB, 1 for grayscale)"
            )
        if position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"position_embedding={position_embedding!r} is unknown; use one of "
                f"{', '.join(POSITION_EMBEDDINGS)}"
            )
        if position_embedding == "sincos" and width % 4:
            raise ValueError(
                f"width={width} must be a multiple of 4 for sin-cos position embeddings; "
                "pick another width or position_embedding='learned'"
            )
        if image_size is not None and image_size % patch_size:
            raise ValueError(
                f"image_size={image_size} is not a multiple of patch_size={patch_size}; "
                "resize the images or pick a patch size that divides them"
            )
        if position_embedding == "learned" and image_size is None:
            raise ValueError(
                "position_embedding='learned' needs image_size (e.g. 224); or use 'sincos'"
            )
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate={drop_path_rate!r} must be in [0, 1)")
        self.num_features = width
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.image_size = image_size
        self.depth = depth
        self.dtype = dtype
        self.position_embedding = position_embedding
        self.deterministic = False
        self.patch_embed = PatchEmbedding(
            in_channels, width, patch_size, frozen=frozen_patch_embedding, dtype=dtype, rngs=rngs
        )
        self.cls_token = nnx.Param(
            nnx.initializers.normal(1e-6)(rngs.params(), (1, 1, width), jnp.float32)
        )
        if position_embedding == "learned":
            num_tokens = (image_size // patch_size) ** 2 + 1
            self.pos_embed = nnx.Param(
                nnx.initializers.truncated_normal(0.02)(
                    rngs.params(), (1, num_tokens, width), jnp.float32
                )
            )
        # Stochastic depth rises linearly over the blocks, as in timm and DeiT.
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        for index, rate in enumerate(rates):
            block = EncoderBlock(
                width,
                num_heads,
                mlp_ratio=mlp_ratio,
                drop_path_rate=rate,
                dtype=dtype,
                rngs=rngs,
            )
            setattr(self, f"block{index}", block)
        self.norm = _layer_norm(width, dtype, rngs)
        self.drop_path_rate = drop_path_rate

    def set_view(self, deterministic: bool | None = None):
        """Used by `nnx.view`: `deterministic=True` turns drop-path off."""
        if deterministic is not None:
            self.deterministic = deterministic

    def blocks(self) -> list[EncoderBlock]:
        """Returns the Transformer blocks in order."""
        return [getattr(self, f"block{index}") for index in range(self.depth)]

    def __call__(self, images: jax.Array, *, rng: jax.Array | None = None) -> jax.Array:
        """Encodes a batch of images.

        Args:
          images: float array of shape (N, H, W, in_channels), NHWC; H and W
            multiples of `patch_size`.
          rng: a PRNG key for drop-path, needed while training when
            `drop_path_rate > 0`; ignored in evaluation. One key per example
            (shape (N,)) makes each example's drops its own, independent of
            how the batch is split over devices; one key is split over the
            batch.

        Returns:
          float32 features of shape (N, width): the class token after the final
          LayerNorm.

        Raises:
          ValueError: on badly shaped images, or a missing drop-path key.
        """
        if images.ndim != 4 or images.shape[-1] != self.in_channels:
            raise ValueError(
                f"expected NHWC images with {self.in_channels} channels, got shape {images.shape}"
            )
        height, width_pixels = images.shape[1:3]
        if height % self.patch_size or width_pixels % self.patch_size:
            raise ValueError(
                f"images of {height}x{width_pixels} pixels do not split into "
                f"{self.patch_size}x{self.patch_size} patches; resize them or change patch_size"
            )
        if self.image_size is not None and (height, width_pixels) != (self.image_size,) * 2:
            raise ValueError(
                f"this ViT was built for {self.image_size}x{self.image_size} images, got "
                f"{height}x{width_pixels}; pass image_size={height} when creating it"
            )
        use_drop_path = not self.deterministic and self.drop_path_rate > 0.0
        if use_drop_path and rng is None:
            raise ValueError(
                f"drop_path_rate={self.drop_path_rate} needs a PRNG key while training: "
                "call the encoder with rng=key, or evaluate it (deterministic=True)"
            )
        tokens = self.patch_embed(images)
        batch, rows, columns, width = tokens.shape
        tokens = tokens.reshape(batch, rows * columns, width)
        # Added to a slice of the tokens rather than broadcast on its own, so the
        # class tokens take the tokens' sharding (a batch sharded over devices
        # under jit cannot be concatenated with a replicated array).
        cls = jnp.zeros_like(tokens[:, :1]) + self.cls_token.get_value().astype(self.dtype)
        if self.position_embedding == "sincos":
            # The class token's position embedding is zero in MoCo v3.
            tokens = tokens + sincos_position_embedding(rows, columns, width).astype(self.dtype)
            x = jnp.concatenate([cls, tokens], axis=1)
        else:
            x = jnp.concatenate([cls, tokens], axis=1)
            x = x + self.pos_embed.get_value().astype(self.dtype)
        example_keys = per_example_keys(rng, batch) if use_drop_path else None
        for index, block in enumerate(self.blocks()):
            block_keys = None
            if example_keys is not None:
                block_keys = jax.vmap(lambda key, i=index: jax.random.fold_in(key, i))(example_keys)
            x = block(x, block_keys)
        return self.norm(x)[:, 0].astype(jnp.float32)


def _standard_vit(size: str, rngs: nnx.Rngs, options: dict) -> VisionTransformer:
    width, depth, num_heads = VIT_SIZES[size]
    settings = {"width": width, "depth": depth, "num_heads": num_heads, **options}
    return VisionTransformer(rngs=rngs, **settings)


def vit_tiny(*, rngs: nnx.Rngs, **options) -> VisionTransformer:
    """ViT-Tiny (width 192, 12 blocks, 3 heads; DeiT-Ti), patch 16 unless given.

    Args:
      rngs: random number generators.
      **options: any keyword argument of `VisionTransformer` (patch_size,
        in_channels, position_embedding, image_size, frozen_patch_embedding,
        drop_path_rate, dtype; width, depth and num_heads override the size).

    Returns:
      The encoder: 5,486,592 parameters at patch 16 on RGB with sin-cos
      embeddings (timm's vit_tiny_patch16_224 without its head and learned
      position embeddings).
    """
    return _standard_vit("tiny", rngs, options)


def vit_small(*, rngs: nnx.Rngs, **options) -> VisionTransformer:
    """ViT-Small (width 384, 12 blocks, 12 heads as MoCo v3's), patch 16 unless given.

    Args:
      rngs: random number generators.
      **options: keyword arguments of `VisionTransformer`, see `vit_tiny`.

    Returns:
      The encoder: 21,590,016 parameters at patch 16 on RGB with sin-cos
      embeddings (MoCo v3's vit_small without head and fixed position embedding).
    """
    return _standard_vit("small", rngs, options)


def vit_base(*, rngs: nnx.Rngs, **options) -> VisionTransformer:
    """ViT-Base (width 768, 12 blocks, 12 heads), patch 16 unless given.

    Args:
      rngs: random number generators.
      **options: keyword arguments of `VisionTransformer`, see `vit_tiny`.

    Returns:
      The encoder: 85,647,360 parameters at patch 16 on RGB with sin-cos
      embeddings (MoCo v3's vit_base without head and fixed position embedding).
    """
    return _standard_vit("base", rngs, options)
