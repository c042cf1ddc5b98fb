"""Data augmentations for contrastive learning, as stateless TensorFlow functions.

Every random choice is drawn with ``tf.random.stateless_*`` from an explicit seed, so
the views of an example depend only on ``(seed, example index, epoch, view index)``
(see `view_seed`): the same seed reproduces the same views on any machine and in
any process, and a run resumed from a checkpoint sees exactly the data it would
have seen without the interruption.

The SimCLR chain (Chen et al. 2020, arXiv:2002.05709, Appendix A) is, per view:

1. random resized crop: area fraction in ``crop_scale`` (0.08, 1), aspect ratio in
   (3/4, 4/3), sampled with ``tf.image.stateless_sample_distorted_bounding_box``
   (``min_object_covered`` 0.1 of the whole image, 100 attempts, whole image when
   all attempts fail), then resized to the output size (bicubic, as the reference);
2. horizontal flip with probability 0.5;
3. colour jitter with probability 0.8: brightness (multiplicative factor in
   [max(1 - b, 0), 1 + b]), contrast, saturation (factors in [1 - x, 1 + x]) and hue
   (shift in [-h, h]), applied in a random order, clipping to [0, 1] after each;
   at strength s, (b, c, x, h) = (0.8s, 0.8s, 0.8s, 0.2s);
4. grayscale with probability 0.2;
5. Gaussian blur with probability 0.5 (ImageNet only): kernel side 10% of the image
   side, made odd, sigma ~ U(0.1, 2.0);
6. (BYOL, Grill et al. 2020, arXiv:2006.07733) solarization with a per-view
   probability.

Deliberate differences from the references, all small:

- Blur pads by reflection where the SimCLR code zero-pads (which darkens borders);
  MoCo v2 and BYOL blur with PIL or a 23-pixel kernel at 224 px, which the 10% rule
  reproduces at 224 px.
- Images with one channel (Fashion-MNIST): saturation, hue and grayscale are
  skipped. On a gray image, broadcasting to RGB, applying them and converting back
  is the identity, so skipping them is exact; their random draws use their own
  seeds, so the other draws do not change.
- The BYOL jitter uses the same multiplicative brightness as SimCLR.

All functions take and return float32 images in [0, 1] of shape (H, W, C).
"""

import dataclasses
import functools

from jaxcl.data._tf import tf

# Seed slots of one view: each operation draws from its own stream, so switching one
# operation off (or skipping it on a 1-channel image) leaves the others unchanged.
_CROP, _FLIP, _JITTER_APPLY, _JITTER, _GRAY, _BLUR_APPLY, _BLUR, _SOLARIZE = range(8)
_NUM_SLOTS = 8

_RESIZE_METHODS = ("bilinear", "bicubic", "area", "nearest")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Parameters of one augmented view; defaults are SimCLR's ImageNet recipe.

    Attributes:
      crop: whether to apply the random resized crop (else only resize).
      crop_scale: range of the crop's area as a fraction of the image area.
      crop_ratio: range of the crop's aspect ratio (width / height).
      crop_min_object_covered: the crop must cover at least this fraction of the
        image (0.1 in SimCLR, so the effective lower area bound is max(0.1, scale[0])).
      crop_max_attempts: sampling attempts before falling back to the whole image.
      resize_method: 'bicubic' (SimCLR), 'bilinear', 'area' or 'nearest'.
      flip_prob: probability of a horizontal flip.
      jitter_prob: probability of applying colour jitter.
      brightness: multiplicative brightness range b: factor in [max(1-b, 0), 1+b].
      contrast: contrast factor in [max(1-c, 0), 1+c].
      saturation: saturation factor in [max(1-s, 0), 1+s] (RGB only).
      hue: hue shift in [-h, h], as a fraction of the colour wheel (RGB only).
      jitter_random_order: apply the four jitter operations in a random order.
      grayscale_prob: probability of converting to grayscale (RGB only).
      blur_prob: probability of a Gaussian blur.
      blur_sigma: range of the blur's standard deviation in pixels.
      blur_kernel_fraction: kernel side as a fraction of the output side (made odd).
      solarize_prob: probability of solarization (x -> 1 - x where x >= threshold).
      solarize_threshold: solarization threshold.
    """

    crop: bool = True
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crop_min_object_covered: float = 0.1
    crop_max_attempts: int = 100
    resize_method: str = "bicubic"
    flip_prob: float = 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    jitter_random_order: bool = True
    grayscale_prob: float = 0.2
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_fraction: float = 0.1
    solarize_prob: float = 0.0
    solarize_threshold: float = 0.5

    def __post_init__(self):
        if self.resize_method not in _RESIZE_METHODS:
            raise ValueError(
                f"unknown resize_method {self.resize_method!r}; valid: {', '.join(_RESIZE_METHODS)}"
            )
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        # Out-of-range values below are not rejected by TensorFlow: they give a
        # NaN image (sigma 0), a silently swapped range or a cryptic kernel error.
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < lo <= hi, got {self.crop_ratio}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 < lo <= hi, got {self.blur_sigma}")
        ranges = {
            "crop_min_object_covered": (0.0, 1.0),
            "flip_prob": (0.0, 1.0),
            "jitter_prob": (0.0, 1.0),
            "grayscale_prob": (0.0, 1.0),
            "blur_prob": (0.0, 1.0),
            "solarize_prob": (0.0, 1.0),
            "brightness": (0.0, float("inf")),
            "contrast": (0.0, float("inf")),
            "saturation": (0.0, float("inf")),
            "hue": (0.0, 0.5),
            "blur_kernel_fraction": (0.0, 1.0),
        }
        for name, (low, high) in ranges.items():
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"{name} must be in [{low}, {high}], got {getattr(self, name)}")
        if self.crop_max_attempts < 1:
            raise ValueError(f"crop_max_attempts must be >= 1, got {self.crop_max_attempts}")


# Jitter values at strength 1 (brightness, contrast, saturation, hue) and the
# preset's default strength.
_SIMCLR_JITTER = (0.8, 0.8, 0.8, 0.2)
_BYOL_JITTER = (0.4, 0.4, 0.2, 0.1)


def _with_jitter(config, unit, strength):
    b, c, s, h = (strength * x for x in unit)
    return dataclasses.replace(config, brightness=b, contrast=c, saturation=s, hue=h)


def _simclr_imagenet(crop_scale=(0.08, 1.0), jitter_strength=1.0):
    view = AugmentConfig(crop_scale=crop_scale, blur_prob=0.5)
    return (_with_jitter(view, _SIMCLR_JITTER, jitter_strength),)


def _simclr_cifar(crop_scale=(0.08, 1.0), jitter_strength=0.5):
    view = AugmentConfig(crop_scale=crop_scale, blur_prob=0.0)
    return (_with_jitter(view, _SIMCLR_JITTER, jitter_strength),)


def _mocov2(crop_scale=(0.2, 1.0), jitter_strength=0.5):
    # MoCo v2: torchvision ColorJitter(0.4, 0.4, 0.4, 0.1) = SimCLR jitter at s = 0.5.
    view = AugmentConfig(crop_scale=crop_scale, resize_method="bilinear", blur_prob=0.5)
    return (_with_jitter(view, _SIMCLR_JITTER, jitter_strength),)


def _byol(crop_scale=(0.08, 1.0), jitter_strength=1.0):
    base = _with_jitter(AugmentConfig(crop_scale=crop_scale), _BYOL_JITTER, jitter_strength)
    return (
        dataclasses.replace(base, blur_prob=1.0, solarize_prob=0.0),
        dataclasses.replace(base, blur_prob=0.1, solarize_prob=0.2),
    )


def _fashion_mnist(crop_scale=(0.25, 1.0), jitter_strength=0.5):
    # 28x28 grayscale clothes: a milder crop than SimCLR's 8% (an 8% crop of a
    # 28-pixel image is 8 pixels wide and often shows no garment at all), flips
    # (garments are left-right symmetric), brightness and contrast only, no blur
    # (a 3-pixel blur of a 28-pixel image removes most texture).
    view = AugmentConfig(
        crop_scale=crop_scale,
        resize_method="bilinear",
        saturation=0.0,
        hue=0.0,
        grayscale_prob=0.0,
        blur_prob=0.0,
    )
    return (_with_jitter(view, (0.8, 0.8, 0.0, 0.0), jitter_strength),)


_PRESETS = {
    "simclr_imagenet": _simclr_imagenet,
    "simclr_cifar": _simclr_cifar,
    "mocov2": _mocov2,
    "byol": _byol,
    "fashion_mnist": _fashion_mnist,
}
PRESET_NAMES = tuple(_PRESETS)


def get_preset(name, *, crop_scale=None, jitter_strength=None, **overrides):
    """Returns the per-view augmentation configs of a named preset.

    Presets (crop area range, jitter (brightness, contrast, saturation, hue) with
    probability 0.8, grayscale probability, blur probability, solarize probability):

    - ``simclr_imagenet`` (SimCLR, arXiv:2002.05709): crop (0.08, 1), jitter s = 1
      i.e. (0.8, 0.8, 0.8, 0.2), grayscale 0.2, blur 0.5.
    - ``simclr_cifar`` (SimCLR CIFAR-10 recipe): as above with s = 0.5 and no blur.
    - ``mocov2`` (MoCo v2, arXiv:2003.04297): crop (0.2, 1), jitter
      (0.4, 0.4, 0.4, 0.1), grayscale 0.2, blur 0.5, bilinear resize.
    - ``byol`` (BYOL, arXiv:2006.07733): crop (0.08, 1), jitter (0.4, 0.4, 0.2, 0.1),
      grayscale 0.2; view 1 blur 1.0 / solarize 0, view 2 blur 0.1 / solarize 0.2.
      Views alternate between the two configs (view v uses config v % 2).
    - ``fashion_mnist`` (jaxcl's choice for 28x28 grayscale): crop (0.25, 1), flip,
      brightness and contrast 0.4 (s = 0.5) with probability 0.8, bilinear resize,
      no blur; saturation, hue and grayscale are off (meaningless on one channel).

    Args:
      name: one of `PRESET_NAMES`.
      crop_scale: overrides the preset's crop area range, e.g. (0.2, 1.0).
      jitter_strength: overrides the strength s that scales the preset's jitter.
      **overrides: any `AugmentConfig` field, applied to every view
        (e.g. ``blur_prob=0.0``).

    Returns:
      A tuple of `AugmentConfig`, one per distinct view; view v uses entry
      ``v % len(result)``.

    Raises:
      ValueError: for an unknown preset name or field.

    Example:
      >>> get_preset("simclr_cifar")[0].brightness
      0.4
    """
    if name not in _PRESETS:
        raise ValueError(f"unknown augmentation preset {name!r}; valid: {', '.join(_PRESETS)}")
    kwargs = {}
    if crop_scale is not None:
        kwargs["crop_scale"] = tuple(float(x) for x in crop_scale)
    if jitter_strength is not None:
        kwargs["jitter_strength"] = float(jitter_strength)
    views = _PRESETS[name](**kwargs)
    fields = {f.name for f in dataclasses.fields(AugmentConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown augmentation option(s) {unknown}; valid: {sorted(fields)}")
    return tuple(dataclasses.replace(view, **overrides) for view in views)


# ----------------------------------------------------------------------------- seeds


def view_seed(seed, index, epoch, view):
    """The stateless seed of one augmented view.

    Args:
      seed: the run's integer data seed.
      index: the example's index in its split (int64 scalar tensor or int).
      epoch: the epoch number.
      view: the view number (0, 1, ...).

    Returns:
      int64 tensor of shape (2,), a seed for ``tf.random.stateless_*``.
    """
    key = tf.stack([tf.cast(seed, tf.int64), tf.constant(0x5EED, tf.int64)])
    for data in (index, epoch, view):
        key = tf.random.experimental.stateless_fold_in(key, tf.cast(data, tf.int64))
    return key


def _check_image(image, name="image", allow_uint8=False):
    """The image as a float32 tensor, or a one-line error about its shape or dtype.

    Only static facts are checked, once when a function is traced, so the checks
    cost nothing per example. Integer images are refused rather than cast: a
    uint8 image cast to float32 is in [0, 255] and would be clipped to white.
    With ``allow_uint8`` a uint8 image passes, unchanged.
    """
    image = tf.convert_to_tensor(image)
    uint8 = allow_uint8 and image.dtype == tf.uint8
    if not image.dtype.is_floating and not uint8:
        raise ValueError(
            f"{name} must be a floating image in [0, 1], got dtype {image.dtype.name}; "
            "convert it with tf.image.convert_image_dtype(image, tf.float32)."
        )
    if image.shape.rank != 3:
        raise ValueError(
            f"{name} must have shape (height, width, channels), got {image.shape}; "
            "augment one image at a time (tf.data's map does)."
        )
    if image.shape[-1] not in (1, 3):
        raise ValueError(
            f"{name} must have 1 or 3 channels, got shape {image.shape}; "
            "pass grayscale or RGB images."
        )
    if 0 in image.shape[:2]:
        raise ValueError(f"{name} is empty (shape {image.shape}); pass a non-empty image.")
    return image if uint8 else tf.cast(image, tf.float32)


def _check_size(size):
    """``size`` as a (height, width) tuple of positive ints, or a one-line error."""
    try:
        size = tuple(int(s) for s in size)
    except TypeError:
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (height, width) with both >= 1, got {size!r}.")
    return size


def _uniform(seed, minval=0.0, maxval=1.0):
    return tf.random.stateless_uniform([], seed=seed, minval=minval, maxval=maxval)


def _maybe(seed, prob, fn, image):
    """Applies ``fn`` with probability ``prob`` (statically skipped when 0 or 1)."""
    if prob <= 0:
        return image
    if prob >= 1:
        return fn(image)
    return tf.cond(_uniform(seed) < prob, lambda: fn(image), lambda: image)


# ----------------------------------------------------------------------- operations


def resize(image, size, method="bicubic"):
    """Resizes to ``size`` = (height, width) and clips to [0, 1] (bicubic overshoots)."""
    image = tf.image.resize(image, size, method=method)
    return tf.clip_by_value(image, 0.0, 1.0)


def random_resized_crop(image, seed, size, config=AugmentConfig()):
    """Crops a random region (SimCLR/Inception style) and resizes it to ``size``.

    Args:
      image: float32 (H, W, C).
      seed: stateless seed, shape (2,).
      size: output (height, width).
      config: uses crop_scale, crop_ratio, crop_min_object_covered,
        crop_max_attempts and resize_method.

    Returns:
      float32 (size[0], size[1], C) in [0, 1].
    """
    return resize(_random_crop(image, seed, config), size, config.resize_method)


def _random_crop(image, seed, config):
    """The random region of `random_resized_crop`, not resized (any dtype)."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=seed,
        min_object_covered=config.crop_min_object_covered,
        aspect_ratio_range=config.crop_ratio,
        area_range=config.crop_scale,
        max_attempts=config.crop_max_attempts,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    crop.set_shape([None, None, image.shape[-1]])  # Keep the static channel count.
    return crop


def random_flip(image, seed, prob=0.5):
    """Flips left-right with probability ``prob``."""
    return _maybe(seed, prob, lambda x: tf.reverse(x, axis=[1]), image)


def color_jitter(image, seed, brightness, contrast, saturation, hue, random_order=True):
    """SimCLR colour jitter: four adjustments in random order, clipped after each.

    Saturation and hue apply only to 3-channel images (they are the identity on
    gray images). A zero strength switches an adjustment off.

    Args:
      image: float32 (H, W, C) in [0, 1].
      seed: stateless seed, shape (2,).
      brightness: multiplicative factor in [max(1-brightness, 0), 1+brightness].
      contrast: factor in [max(1-contrast, 0), 1+contrast].
      saturation: factor in [max(1-saturation, 0), 1+saturation].
      hue: shift in [-hue, hue].
      random_order: apply the adjustments in a random order (else the order above).

    Returns:
      float32 (H, W, C) in [0, 1].
    """
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    rgb = image.shape[-1] == 3

    def clip(x):
        return tf.clip_by_value(x, 0.0, 1.0)

    def factor(s, strength):
        return _uniform(s, max(1.0 - strength, 0.0), 1.0 + strength)

    # Slot k of `ops` is adjustment k; the random order is the argsort of one uniform
    # per slot, drawn for all four slots even when some are off, so the relative
    # order of the enabled adjustments does not depend on which others are enabled
    # (this is what makes skipping saturation and hue on gray images exact).
    ops = {}
    if brightness > 0:
        ops[0] = lambda x: clip(x * factor(seeds[0], brightness))
    if contrast > 0:
        ops[1] = lambda x: clip(tf.image.adjust_contrast(x, factor(seeds[1], contrast)))
    if saturation > 0 and rgb:
        ops[2] = lambda x: clip(tf.image.adjust_saturation(x, factor(seeds[2], saturation)))
    if hue > 0 and rgb:
        ops[3] = lambda x: clip(tf.image.adjust_hue(x, _uniform(seeds[3], -hue, hue)))
    if not ops:
        return image
    branches = list(ops.values())
    if not random_order or len(branches) == 1:
        for op in branches:
            image = op(image)
        return image
    keys = tf.gather(tf.random.stateless_uniform([4], seed=seeds[4]), list(ops))
    order = tf.argsort(keys)
    for i in range(len(branches)):
        image = tf.switch_case(order[i], [lambda op=op, x=image: op(x) for op in branches])
    return image


def to_grayscale(image):
    """Converts RGB to gray and back to three equal channels (identity for 1 channel)."""
    if image.shape[-1] != 3:
        return image
    return tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, 3])


def blur_kernel_size(side, fraction=0.1):
    """Odd kernel side for a blur of an image of side ``side``: 2 * (side*fraction // 2) + 1.

    As SimCLR: 10% of 224 is 22, giving a 23-pixel kernel; 28 or 32 pixels give 3.
    """
    return 2 * (int(side * fraction) // 2) + 1


def gaussian_blur(image, seed, kernel_size, sigma_range=(0.1, 2.0)):
    """Separable Gaussian blur with sigma ~ U(sigma_range), reflect-padded.

    Args:
      image: float32 (H, W, C); H and W must exceed kernel_size // 2.
      seed: stateless seed, shape (2,).
      kernel_size: odd kernel side in pixels.
      sigma_range: range of the standard deviation in pixels.

    Returns:
      float32 (H, W, C).
    """
    radius = kernel_size // 2
    if radius == 0:
        return image
    if any(side is not None and side <= radius for side in image.shape[:2]):
        raise ValueError(
            f"gaussian_blur: a kernel of side {kernel_size} needs images larger than "
            f"{radius} pixels, got shape {image.shape}; use a smaller kernel_size."
        )
    sigma = _uniform(seed, *sigma_range)
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-(x**2) / (2.0 * sigma**2))
    kernel /= tf.reduce_sum(kernel)
    channels = image.shape[-1]
    kernel_h = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    kernel_w = tf.reshape(kernel_h, [1, -1, channels, 1])
    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
    out = tf.nn.depthwise_conv2d(padded, kernel_h, [1, 1, 1, 1], "VALID")
    out = tf.nn.depthwise_conv2d(out, kernel_w, [1, 1, 1, 1], "VALID")
    return out[0]


def solarize(image, threshold=0.5):
    """Inverts pixels at or above ``threshold``: x -> 1 - x (BYOL)."""
    return tf.where(image < threshold, image, 1.0 - image)


def _check_seed(seed):
    seed = tf.convert_to_tensor(seed)
    if seed.shape != (2,):
        raise ValueError(f"seed must have shape (2,), got {seed.shape}; use view_seed(...).")
    return seed


def geometric_view(image, seed, size, config):
    """The geometric half of one view: random resized crop (or resize) and flip.

    With ``augment_on_device`` this is all the host does; `augment_view` draws
    the same crop and flip from the same seed, so the two modes see the same
    geometry.

    Args:
      image: float32 (H, W, C) in [0, 1] with a static channel count.
      seed: stateless seed of this view, shape (2,) (see `view_seed`).
      size: output (height, width).
      config: an `AugmentConfig` (its crop, resize and flip fields).

    Returns:
      float32 (size[0], size[1], C) in [0, 1].
    """
    image = _check_image(image)
    size = _check_size(size)
    seeds = tf.random.experimental.stateless_split(_check_seed(seed), num=_NUM_SLOTS)
    if config.crop:
        image = random_resized_crop(image, seeds[_CROP], size, config)
    else:
        image = resize(image, size, config.resize_method)
    image = random_flip(image, seeds[_FLIP], config.flip_prob)
    return tf.ensure_shape(image, (*size, image.shape[-1]))


# tf.image.resize converts a uint8 image to float32 before resizing; these kernels
# read the bytes directly (0.46 instead of 0.85 ms per 224 px bicubic view, one
# core) and give the same floats as tf.image.resize of the float image (its
# half-pixel centres, no antialiasing).
_UINT8_RESIZE_KERNELS = {
    "bicubic": tf.raw_ops.ResizeBicubic,
    "bilinear": tf.raw_ops.ResizeBilinear,
}


def _resize_uint8(image, size, method):
    """``tf.image.resize`` of a uint8 image (float32 out, in 0..255, not clipped)."""
    kernel = _UINT8_RESIZE_KERNELS.get(method)
    if kernel is None:
        return tf.image.resize(image, size, method=method)
    resized = kernel(images=image[None], size=size, align_corners=False, half_pixel_centers=True)
    return resized[0]


def _geometric_view_uint8(image, seed, size, config):
    """`geometric_view` of a uint8 image, uint8 out: the same crop and flip.

    Only the crop is converted to float (inside the resize), not the whole
    source, and the flip moves bytes; the values equal `geometric_view`'s
    rounded to 0..255 (up to float rounding at half-integers).
    """
    seeds = tf.random.experimental.stateless_split(seed, num=_NUM_SLOTS)
    if config.crop:
        image = _random_crop(image, seeds[_CROP], config)
    resized = _resize_uint8(image, size, config.resize_method)
    # Rounds half up (a cast truncates): one pass over the view, not three.
    image = tf.cast(tf.clip_by_value(resized + 0.5, 0.0, 255.0), tf.uint8)
    image = random_flip(image, seeds[_FLIP], config.flip_prob)
    return tf.ensure_shape(image, (*size, image.shape[-1]))


def device_view_key(seed):
    """The JAX key data of a view's photometric half, from its stateless seed.

    Args:
      seed: the view's seed, shape (2,) (see `view_seed`).

    Returns:
      uint32 tensor (2,): key data for ``jax.random.wrap_key_data`` (threefry),
      drawn from a slot of its own, so it is independent of the view's crop and flip.
    """
    seeds = tf.random.experimental.stateless_split(_check_seed(seed), num=_NUM_SLOTS + 1)
    bits = tf.random.stateless_uniform(
        [2], seed=seeds[_NUM_SLOTS], minval=None, maxval=None, dtype=tf.int32
    )
    return tf.bitcast(bits, tf.uint32)


def augment_view(image, seed, size, config):
    """Draws one augmented view of an image.

    Args:
      image: float32 (H, W, C) in [0, 1] with a static channel count.
      seed: stateless seed of this view, shape (2,) (see `view_seed`).
      size: output (height, width).
      config: an `AugmentConfig`.

    Returns:
      float32 (size[0], size[1], C) in [0, 1].

    Raises:
      ValueError: for an image that is not a floating (H, W, 1 or 3) array, a
        size that is not two positive ints or a seed that is not of shape (2,).
    """
    image = geometric_view(image, seed, size, config)
    size = _check_size(size)
    seeds = tf.random.experimental.stateless_split(_check_seed(seed), num=_NUM_SLOTS)
    image = _maybe(
        seeds[_JITTER_APPLY],
        config.jitter_prob,
        lambda x: color_jitter(
            x,
            seeds[_JITTER],
            config.brightness,
            config.contrast,
            config.saturation,
            config.hue,
            config.jitter_random_order,
        ),
        image,
    )
    if image.shape[-1] == 3:
        image = _maybe(seeds[_GRAY], config.grayscale_prob, to_grayscale, image)
    kernel_size = blur_kernel_size(min(size), config.blur_kernel_fraction)
    image = _maybe(
        seeds[_BLUR_APPLY],
        config.blur_prob,
        lambda x: gaussian_blur(x, seeds[_BLUR], kernel_size, config.blur_sigma),
        image,
    )
    image = _maybe(
        seeds[_SOLARIZE],
        config.solarize_prob,
        lambda x: solarize(x, config.solarize_threshold),
        image,
    )
    image = tf.clip_by_value(image, 0.0, 1.0)
    return tf.ensure_shape(image, (*size, image.shape[-1]))


def _check_views(views):
    if not views or not all(isinstance(view, AugmentConfig) for view in views):
        raise ValueError(
            f"views must be a non-empty sequence of AugmentConfig, got {views!r}; "
            "use get_preset(name) (twice for two views of a one-config preset)."
        )


def augment_views(image, views, seed, index, epoch, size):
    """Draws ``len(views)`` augmented views of one example.

    Args:
      image: float32 (H, W, C) in [0, 1].
      views: a sequence of `AugmentConfig`, one per view.
      seed: the run's data seed.
      index: the example's index in its split.
      epoch: the epoch.
      size: output (height, width).

    Returns:
      float32 (num_views, size[0], size[1], C).

    Raises:
      ValueError: for a bad image or size (see `augment_view`) or ``views`` that
        is empty or holds anything but `AugmentConfig`.
    """
    image = _check_image(image)
    size = _check_size(size)
    _check_views(views)
    return tf.stack(
        [
            _traced_view(config, size, image.shape[-1])(image, view_seed(seed, index, epoch, v))
            for v, config in enumerate(views)
        ]
    )


def geometric_views(image, views, seed, index, epoch, size):
    """The geometric halves of ``len(views)`` views, and the keys of their photometric halves.

    The host's share of ``augment_on_device``: `augment_views` with the colour
    jitter, grayscale, blur and solarization left to
    `jaxcl.data.device_augment.finish_views`, which draws them from the keys.

    Args:
      image: uint8 (H, W, C) (decoded, as the sources give it: the fast path)
        or float32 in [0, 1].
      views: a sequence of `AugmentConfig`, one per view.
      seed: the run's data seed.
      index: the example's index in its split.
      epoch: the epoch.
      size: output (height, width).

    Returns:
      ``(views, keys)``: uint8 (num_views, size[0], size[1], C), the geometric
      views rounded to 0..255, and uint32 (num_views, 2), each view's
      `device_view_key`.
    """
    image = _check_image(image, allow_uint8=True)
    if image.dtype != tf.uint8:
        image = tf.cast(tf.round(image * 255.0), tf.uint8)
    size = _check_size(size)
    _check_views(views)
    seeds = [view_seed(seed, index, epoch, v) for v in range(len(views))]
    geometric = tf.stack(
        [
            _geometric_view_uint8(image, view_seed_, size, config)
            for config, view_seed_ in zip(views, seeds, strict=True)
        ]
    )
    return geometric, tf.stack([device_view_key(view_seed_) for view_seed_ in seeds])


@functools.lru_cache(maxsize=128)
def _traced_view(config, size, channels):
    """`augment_view` traced once per (config, size, channels), reused by every pipeline.

    Tracing the jitter's switch_case branches takes about a second; caching it makes
    building a second iterator (or a second view with the same config) immediate.
    """
    return tf.function(
        lambda image, seed: augment_view(image, seed, size, config),
        input_signature=[
            tf.TensorSpec([None, None, channels], tf.float32),
            tf.TensorSpec([2], tf.int64),
        ],
        autograph=False,
    )


def center_crop(image, fraction):
    """Central square-ish crop keeping ``fraction`` of the shorter side (SimCLR eval).

    Args:
      image: (H, W, C).
      fraction: kept fraction of min(H, W), e.g. 0.875 for ImageNet.

    Returns:
      (s, s, C) with s = round(fraction * min(H, W)).
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.cast(
        tf.math.round(fraction * tf.cast(tf.minimum(height, width), tf.float32)), tf.int32
    )
    top = (height - side + 1) // 2
    left = (width - side + 1) // 2
    return tf.slice(image, [top, left, 0], [side, side, -1])


def preprocess_eval(image, size, crop_fraction=1.0, method="bicubic"):
    """Evaluation preprocessing: no randomness; optional center crop, then resize.

    SimCLR evaluates ImageNet on a 0.875 center crop resized to 224 and small
    images (CIFAR, Fashion-MNIST) as they are.

    Args:
      image: float32 (H, W, C) in [0, 1].
      size: output (height, width).
      crop_fraction: kept fraction of the shorter side; 1.0 for no crop.
      method: resize method.

    Returns:
      float32 (size[0], size[1], C) in [0, 1].
    """
    image = _check_image(image)
    size = _check_size(size)
    if not 0 < crop_fraction <= 1:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}.")
    if crop_fraction < 1.0:
        image = center_crop(image, crop_fraction)
    if image.shape[0] == size[0] and image.shape[1] == size[1]:
        return image
    return tf.ensure_shape(resize(image, size, method), (*size, image.shape[-1]))


__all__ = [
    "PRESET_NAMES",
    "AugmentConfig",
    "augment_view",
    "augment_views",
    "blur_kernel_size",
    "center_crop",
    "color_jitter",
    "device_view_key",
    "gaussian_blur",
    "geometric_view",
    "geometric_views",
    "get_preset",
    "preprocess_eval",
    "random_flip",
    "random_resized_crop",
    "resize",
    "solarize",
    "to_grayscale",
    "view_seed",
]
