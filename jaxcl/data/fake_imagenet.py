"""A fake ImageNet in the real manual-download format, for rehearsing the pod path.

``write_manual_archives(manual_dir)`` writes the two files that image-net.org
gives and that TFDS's own ``imagenet2012`` builder reads from ``manual_dir``:

- ``ILSVRC2012_img_train.tar``: one inner tar per class, ``<synset>.tar``,
  holding ``<synset>_<i>.JPEG`` files;
- ``ILSVRC2012_img_val.tar``: flat ``ILSVRC2012_val_<8 digits>.JPEG`` files.

TFDS labels the validation images with its own ``validation_labels.txt``
zipped with the sorted file names, so the k validation images get the classes
of its first k lines; the training classes are those classes. Each class is
a colour (plus noise), so a linear probe on any encoder can tell them apart
and a rehearsal's accuracy means something. Images are JPEGs of a few sizes,
like the real ones.
"""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np
import tensorflow_datasets as tfds

from jaxcl.data._tf import tf

__all__ = ["TRAIN_ARCHIVE", "VALIDATION_ARCHIVE", "write_manual_archives"]

TRAIN_ARCHIVE = "ILSVRC2012_img_train.tar"
VALIDATION_ARCHIVE = "ILSVRC2012_img_val.tar"


def _validation_synsets() -> list[str]:
    path = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt")
    return path.read_text().split()


def _jpeg(colour: np.ndarray, rng: np.random.Generator) -> bytes:
    height, width = rng.choice([36, 44, 52]), rng.choice([40, 48])
    noise = rng.integers(-30, 30, (height, width, 3))
    pixels = np.clip(colour[None, None, :] + noise, 0, 255).astype(np.uint8)
    return tf.io.encode_jpeg(pixels, quality=90).numpy()


def _add(archive: tarfile.TarFile, name: str, payload: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(payload)
    archive.addfile(member, io.BytesIO(payload))


def write_manual_archives(
    manual_dir: str, *, num_validation: int = 12, train_per_class: int = 8, seed: int = 0
) -> dict:
    """Writes a small ``ILSVRC2012_img_train.tar`` and ``ILSVRC2012_img_val.tar``.

    Args:
      manual_dir: the directory to write them to (``dataset_options.manual_dir``).
      num_validation: validation images; their classes (TFDS's first
        ``num_validation`` validation labels) are the training classes.
      train_per_class: training images per class.
      seed: seed of the colours, sizes and noise.

    Returns:
      ``{'classes': [...synsets...], 'train': count, 'validation': count}``.
    """
    os.makedirs(manual_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    validation_synsets = _validation_synsets()[:num_validation]
    classes = sorted(set(validation_synsets))
    colours = {synset: rng.integers(40, 216, 3) for synset in classes}
    with tarfile.open(os.path.join(manual_dir, TRAIN_ARCHIVE), "w") as train:
        for synset in classes:
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as class_archive:
                for i in range(train_per_class):
                    _add(class_archive, f"{synset}_{i}.JPEG", _jpeg(colours[synset], rng))
            _add(train, f"{synset}.tar", inner.getvalue())
    with tarfile.open(os.path.join(manual_dir, VALIDATION_ARCHIVE), "w") as validation:
        for i, synset in enumerate(validation_synsets, start=1):
            _add(validation, f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg(colours[synset], rng))
    return {
        "classes": classes,
        "train": len(classes) * train_per_class,
        "validation": num_validation,
    }
