"""The photometric half of the augmentations, in JAX, to run inside the jitted step.

SimCLR's colour jitter and blur are what keeps a GPU waiting on its host: in
``jaxcl.data.augment`` they take about 80% of the per-image work. With
``config.augment_on_device`` the host pipeline stops after the geometric half
(decode, random resized crop, resize, flip; `jaxcl.data.augment.geometric_view`)
and sends uint8 views plus one random key per view; this module draws the rest
of the view on the accelerator, per example, vectorised over the batch:

1. colour jitter with probability ``jitter_prob``: brightness, contrast,
   saturation and hue, in a random order, clipping to [0, 1] after each;
2. grayscale with probability ``grayscale_prob`` (RGB only);
3. Gaussian blur with probability ``blur_prob``: a separable kernel of side
   `jaxcl.data.augment.blur_kernel_size` of the view, sigma ~ U(``blur_sigma``),
   reflect-padded;
4. solarization with probability ``solarize_prob`` (BYOL).

Every operation computes what its ``tf.image`` counterpart in
``jaxcl.data.augment`` computes (tested op by op for fixed factors), and every
random parameter has the same distribution there and here (tested on the
distribution of outcomes). The draws themselves differ: TensorFlow's and JAX's
random streams are different generators. A view's key is derived on the host
from (seed, example index, epoch, view) (`jaxcl.data.augment.device_view_key`),
so the views do not depend on the number of devices or processes, and a resumed
run draws exactly what an uninterrupted one would.

Under ``vmap`` a per-example choice cannot skip work: each applied-with-
probability operation is computed for every example and selected with
``jnp.where``; probabilities of 0 (or 1) are decided statically and cost
nothing (or skip the select), as in the tf.data version.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcl.data.augment import AugmentConfig, blur_kernel_size

# tf.image.rgb_to_grayscale's weights (ITU-R BT.601 luma).
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)

# Random draws of one view, one key each (split from the view's key).
_JITTER_APPLY, _FACTORS, _ORDER, _GRAY, _BLUR_APPLY, _SIGMA, _SOLARIZE = range(7)
_NUM_DRAWS = 7


# ---------------------------------------------------------------------- operations


def _clip(image):
    return jnp.clip(image, 0.0, 1.0)


def adjust_brightness(image, factor):
    """Multiplies by ``factor`` and clips (SimCLR's brightness; ``image * factor``)."""
    return _clip(image * factor)


def adjust_contrast(image, factor):
    """``tf.image.adjust_contrast``: ``(x - mean) * factor + mean`` per channel, clipped.

    Args:
      image: float (H, W, C).
      factor: the contrast factor.

    Returns:
      float (H, W, C) in [0, 1].
    """
    mean = jnp.mean(image, axis=(0, 1), keepdims=True)
    return _clip((image - mean) * factor + mean)


def rgb_to_hsv(image):
    """RGB in [0, 1] to HSV in [0, 1], with TensorFlow's conventions (hue 0 for grays).

    Args:
      image: float (..., 3).

    Returns:
      float (..., 3): hue (fraction of the colour wheel), saturation, value.
    """
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]
    value = jnp.max(image, axis=-1)
    chroma = value - jnp.min(image, axis=-1)
    saturation = jnp.where(value > 0, chroma / jnp.where(value > 0, value, 1.0), 0.0)
    safe = jnp.where(chroma > 0, chroma, 1.0)
    hue = jnp.where(
        red == value,
        (green - blue) / safe,
        jnp.where(green == value, (blue - red) / safe + 2.0, (red - green) / safe + 4.0),
    )
    hue = jnp.where(chroma > 0, hue / 6.0, 0.0)
    hue = jnp.where(hue < 0, hue + 1.0, hue)
    return jnp.stack([hue, saturation, value], axis=-1)


def hsv_to_rgb(image):
    """HSV in [0, 1] back to RGB, with TensorFlow's conventions (the inverse of `rgb_to_hsv`).

    Args:
      image: float (..., 3): hue, saturation, value.

    Returns:
      float (..., 3) RGB.
    """
    hue, saturation, value = image[..., 0], image[..., 1], image[..., 2]
    chroma = saturation * value
    low = value - chroma
    sector = hue * 6.0
    second = chroma * (1.0 - jnp.abs(jnp.fmod(sector, 2.0) - 1.0))
    category = jnp.floor(sector)
    zero = jnp.zeros_like(chroma)

    def channel(full, partial):
        # The channel is `chroma` in the sectors `full`, `second` in `partial`, else 0:
        # elementwise selects rather than a table gather, so XLA fuses the whole
        # conversion into one pass over the image.
        is_full = (category == full[0]) | (category == full[1])
        is_partial = (category == partial[0]) | (category == partial[1])
        return jnp.where(is_full, chroma, jnp.where(is_partial, second, zero))

    # (red, green, blue) above `low` in sectors 0..5 of the colour wheel; outside
    # them (hue exactly 1 or above) every channel is 0, as TensorFlow gives black.
    rgb = jnp.stack([channel((0, 5), (1, 4)), channel((1, 2), (0, 3)), channel((3, 4), (2, 5))], -1)
    return rgb + low[..., None]


def adjust_saturation(image, factor):
    """``tf.image.adjust_saturation``: scales HSV saturation (clipped to [0, 1]), clips.

    Args:
      image: float (H, W, 3) in [0, 1].
      factor: the saturation factor.

    Returns:
      float (H, W, 3) in [0, 1].
    """
    hsv = rgb_to_hsv(image)
    saturation = jnp.clip(hsv[..., 1] * factor, 0.0, 1.0)
    return _clip(hsv_to_rgb(hsv.at[..., 1].set(saturation)))


def adjust_hue(image, delta):
    """``tf.image.adjust_hue``: rotates the hue by ``delta`` turns, clips.

    Args:
      image: float (H, W, 3) in [0, 1].
      delta: the shift, in [-0.5, 0.5].

    Returns:
      float (H, W, 3) in [0, 1].
    """
    hsv = rgb_to_hsv(image)
    hue = jnp.fmod(hsv[..., 0] + delta, 1.0)
    hue = jnp.where(hue < 0, hue + 1.0, hue)
    return _clip(hsv_to_rgb(hsv.at[..., 0].set(hue)))


def to_grayscale(image):
    """``tf.image.rgb_to_grayscale`` broadcast back to three channels (1 channel: identity)."""
    if image.shape[-1] != 3:
        return image
    gray = image @ jnp.asarray(_GRAY_WEIGHTS, image.dtype)
    return jnp.broadcast_to(gray[..., None], image.shape)


def gaussian_blur(image, sigma, kernel_size):
    """Separable Gaussian blur, reflect-padded, as `jaxcl.data.augment.gaussian_blur`.

    Two 1-D passes of ``kernel_size`` taps: a sum of shifted copies weighted by a
    normalised Gaussian of standard deviation ``sigma``, which vectorises over a
    batch of per-example sigmas without a per-example convolution kernel.

    Args:
      image: float (H, W, C); H and W must exceed ``kernel_size // 2``.
      sigma: the standard deviation in pixels (a scalar, traced or not).
      kernel_size: odd kernel side (static).

    Returns:
      float (H, W, C).
    """
    radius = kernel_size // 2
    if radius == 0:
        return image
    height, width = image.shape[:2]
    if min(height, width) <= radius:
        raise ValueError(
            f"gaussian_blur: a kernel of side {kernel_size} needs images larger than "
            f"{radius} pixels, got shape {image.shape}; use a smaller kernel_size."
        )
    taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    weights = jnp.exp(-(taps**2) / (2.0 * jnp.asarray(sigma, jnp.float32) ** 2))
    weights = weights / jnp.sum(weights)
    padded = jnp.pad(image, ((radius, radius), (0, 0), (0, 0)), mode="reflect")
    image = sum(weights[k] * padded[k : k + height] for k in range(kernel_size))
    padded = jnp.pad(image, ((0, 0), (radius, radius), (0, 0)), mode="reflect")
    return sum(weights[k] * padded[:, k : k + width] for k in range(kernel_size))


def solarize(image, threshold=0.5):
    """Inverts pixels at or above ``threshold``: x -> 1 - x (BYOL)."""
    return jnp.where(image < threshold, image, 1.0 - image)


# ------------------------------------------------------------------ random views


def _jitter_ops(config: AugmentConfig, channels: int) -> dict:
    """Jitter slot -> ``(op(image, draw), low, high)`` of the enabled adjustments.

    Slots as ``jaxcl.data.augment.color_jitter``: 0 brightness, 1 contrast,
    2 saturation, 3 hue; saturation and hue only for RGB images.
    """
    rgb = channels == 3
    ops = {}
    if config.brightness > 0:
        ops[0] = (adjust_brightness, max(1 - config.brightness, 0.0), 1 + config.brightness)
    if config.contrast > 0:
        ops[1] = (adjust_contrast, max(1 - config.contrast, 0.0), 1 + config.contrast)
    if config.saturation > 0 and rgb:
        ops[2] = (adjust_saturation, max(1 - config.saturation, 0.0), 1 + config.saturation)
    if config.hue > 0 and rgb:
        ops[3] = (adjust_hue, -config.hue, config.hue)
    return ops


def _color_jitter(image, keys, config: AugmentConfig):
    ops = _jitter_ops(config, image.shape[-1])
    if not ops:
        return image
    draws = jax.random.uniform(keys[_FACTORS], (4,))
    slots = list(ops)
    parameters = {slot: ops[slot][1] + (ops[slot][2] - ops[slot][1]) * draws[slot] for slot in ops}
    if not config.jitter_random_order or len(slots) == 1:
        for slot in slots:
            image = ops[slot][0](image, parameters[slot])
        return image
    # As tf.data: the order is the argsort of one uniform per slot, all four drawn.
    order = jnp.argsort(jax.random.uniform(keys[_ORDER], (4,))[jnp.asarray(slots)])
    for position in range(len(slots)):
        # Each position's input is materialised (the barrier): fused across
        # positions, XLA's GPU compiler recomputed every earlier candidate inside
        # each later one, 4**4 colour conversions per pixel (an H200 took 130 ms
        # for 512 views at 224 px, against 5 ms in a fixed order). Within one
        # position the candidates and their chain of selects fuse into one pass.
        image = jax.lax.optimization_barrier(image)
        chosen = ops[slots[-1]][0](image, parameters[slots[-1]])
        for index in range(len(slots) - 2, -1, -1):
            slot = slots[index]
            chosen = jnp.where(
                order[position] == index, ops[slot][0](image, parameters[slot]), chosen
            )
        image = chosen
    return image


def _maybe(key, prob, fn, image):
    """``fn(image)`` with probability ``prob``; 0 and 1 are decided statically."""
    if prob <= 0:
        return image
    if prob >= 1:
        return fn(image)
    return jnp.where(jax.random.uniform(key) < prob, fn(image), image)


def photometric_view(image, key, config: AugmentConfig):
    """The photometric half of one view (jitter, grayscale, blur, solarize), in [0, 1].

    Args:
      image: float32 (H, W, C), C in (1, 3), in [0, 1]: a geometric view.
      key: the view's random key (``jax.random.wrap_key_data`` of its uint32 pair).
      config: the view's `AugmentConfig` (its crop and flip fields are unused).

    Returns:
      float32 (H, W, C) in [0, 1].
    """
    keys = jax.random.split(key, _NUM_DRAWS)
    image = _maybe(
        keys[_JITTER_APPLY], config.jitter_prob, lambda x: _color_jitter(x, keys, config), image
    )
    if image.shape[-1] == 3:
        image = _maybe(keys[_GRAY], config.grayscale_prob, to_grayscale, image)
    kernel_size = blur_kernel_size(min(image.shape[:2]), config.blur_kernel_fraction)
    low, high = config.blur_sigma
    sigma = jax.random.uniform(keys[_SIGMA], (), minval=low, maxval=high)
    image = _maybe(
        keys[_BLUR_APPLY], config.blur_prob, lambda x: gaussian_blur(x, sigma, kernel_size), image
    )
    image = _maybe(
        keys[_SOLARIZE],
        config.solarize_prob,
        lambda x: solarize(x, config.solarize_threshold),
        image,
    )
    return _clip(image)


def finish_views(views, view_keys, configs, dtype=jnp.float32):
    """Finishes a batch of geometric views on the device: jitter, grayscale, blur, solarize.

    Args:
      views: uint8 (batch, num_views, H, W, C): the host pipeline's output with
        ``augment_on_device`` (0..255), or float in [0, 1].
      view_keys: uint32 (batch, num_views, 2): each view's key data.
      configs: one `AugmentConfig` per view (``len(configs) == num_views``).
      dtype: the dtype of the result (the arithmetic is float32).

    Returns:
      ``dtype`` (batch, num_views, H, W, C) in [0, 1].

    Raises:
      ValueError: for views and keys of mismatched shapes, or a config count
        that is not the number of views.
    """
    if views.ndim != 5 or view_keys.shape != (*views.shape[:2], 2):
        raise ValueError(
            f"views (batch, views, H, W, C) and view_keys (batch, views, 2) do not match: "
            f"{views.shape} and {view_keys.shape}; pass a batch made with augment_on_device."
        )
    if len(configs) != views.shape[1]:
        raise ValueError(f"{len(configs)} augmentation configs for {views.shape[1]} views.")
    if jnp.issubdtype(views.dtype, jnp.integer):
        views = views.astype(jnp.float32) / 255.0
    views = views.astype(jnp.float32)
    keys = jax.random.wrap_key_data(view_keys.astype(jnp.uint32))
    finished = [
        jax.vmap(lambda image, key, c=config: photometric_view(image, key, c))(
            views[:, v], keys[:, v]
        )
        for v, config in enumerate(configs)
    ]
    return jnp.stack(finished, axis=1).astype(dtype)


__all__ = [
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "finish_views",
    "gaussian_blur",
    "hsv_to_rgb",
    "photometric_view",
    "rgb_to_hsv",
    "solarize",
    "to_grayscale",
]
