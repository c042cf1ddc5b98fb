"""SimCLR's ImageNet augmentation written with PIL, as torchvision runs it on a CPU.

The reference for ``bench/input_pipeline.py``: the per-image work of
``torchvision.transforms`` (RandomResizedCrop, RandomHorizontalFlip,
RandomApply(ColorJitter(0.8, 0.8, 0.8, 0.2), p=0.8), RandomGrayscale(0.2),
GaussianBlur with p 0.5, ToTensor) done with the same PIL calls torchvision's
functional transforms make, without importing torchvision (it does not import
beside the CPU torch build pinned in the ``bench`` extra). One Python process
is one core, as in a DataLoader worker.

Not part of the library: it exists to be timed against ``jaxcl.data``.
"""

from __future__ import annotations

import math
import random

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

JITTER = (0.8, 0.8, 0.8, 0.2)  # SimCLR's colour jitter at strength 1


def random_resized_crop(image, size, rng, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop: 10 tries of area and log-uniform aspect, then centre."""
    width, height = image.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = rng.randint(0, width - w)
            top = rng.randint(0, height - h)
            break
    else:
        w, h = min(width, height), min(width, height)
        left, top = (width - w) // 2, (height - h) // 2
    return image.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h))


def adjust_hue(image, factor):
    """torchvision's adjust_hue on PIL: shift the H channel of HSV by ``factor`` turns."""
    hue, saturation, value = image.convert("HSV").split()
    shifted = (np.asarray(hue, np.uint8).astype(np.int16) + int(factor * 255)) % 256
    hue = Image.fromarray(shifted.astype(np.uint8), "L")
    return Image.merge("HSV", (hue, saturation, value)).convert("RGB")


def color_jitter(image, rng, strengths=JITTER):
    """ColorJitter: brightness, contrast, saturation and hue in a random order."""
    brightness, contrast, saturation, hue = strengths
    operations = [
        lambda im: ImageEnhance.Brightness(im).enhance(rng.uniform(1 - brightness, 1 + brightness)),
        lambda im: ImageEnhance.Contrast(im).enhance(rng.uniform(1 - contrast, 1 + contrast)),
        lambda im: ImageEnhance.Color(im).enhance(rng.uniform(1 - saturation, 1 + saturation)),
        lambda im: adjust_hue(im, rng.uniform(-hue, hue)),
    ]
    rng.shuffle(operations)
    for operation in operations:
        image = operation(image)
    return image


def geometric_view(image, size, rng):
    """RandomResizedCrop and RandomHorizontalFlip: the host's share with augment_on_device."""
    view = random_resized_crop(image, size, rng)
    if rng.random() < 0.5:
        view = view.transpose(Image.FLIP_LEFT_RIGHT)
    return view


def simclr_view(image, size, rng):
    """One SimCLR ImageNet view of a PIL RGB image, as float32 HWC in [0, 1]."""
    view = geometric_view(image, size, rng)
    if rng.random() < 0.8:
        view = color_jitter(view, rng)
    if rng.random() < 0.2:
        view = view.convert("L").convert("RGB")
    if rng.random() < 0.5:
        view = view.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.1, 2.0)))
    return np.asarray(view, np.float32) / 255.0


def two_view_batches(sources, batch_size, size=224, seed=0, geometric_only=False):
    """Yields (batch, 2, size, size, 3) batches of two views of cycled sources.

    Args:
      sources: uint8 (n, H, W, 3) source images, decoded once up front (the
        reference gets its images for free; jaxcl's pipeline also makes its own).
      batch_size: examples per batch.
      size: output side.
      seed: seed of the augmentation randomness.
      geometric_only: crop, resize and flip only, as uint8 (what a host does
        when the rest of the chain runs on the accelerator); else the whole
        chain as float32 in [0, 1].
    """
    rng = random.Random(seed)
    images = [Image.fromarray(source) for source in sources]
    view = geometric_view if geometric_only else simclr_view
    dtype = np.uint8 if geometric_only else np.float32
    index = 0
    while True:
        batch = np.empty((batch_size, 2, size, size, 3), dtype)
        for example in range(batch_size):
            image = images[index % len(images)]
            index += 1
            batch[example, 0] = view(image, size, rng)
            batch[example, 1] = view(image, size, rng)
        yield batch
