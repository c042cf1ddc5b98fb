"""A tiny TFDS dataset, ``jaxcl_tiny_shapes``, registered when this module is imported.

Stands in for any TFDS dataset a user names (``dtd``, ``eurosat/rgb``, one of
their own built with ``tfds build``): it is prepared by TFDS itself into a
``data_dir`` in TFDS's on-disk format, so jaxcl reads it exactly as it reads a
real one. Two configs:

- ``fixed``: 20x20 RGB images in memory-friendly fixed size, label ``label``.
- ``photos``: JPEG images of varying size (streamed, like ImageNet), the class in
  a feature named ``kind``, and an unlabelled ``extra`` split.

Each class has its own colour, so a linear probe on any sensible encoder
separates the classes.
"""

import numpy as np
import tensorflow_datasets as tfds

COLOURS = ((220, 0, 0), (0, 200, 0), (0, 0, 230))
SPLIT_SIZES = {"train": 24, "test": 12}


class JaxclTinyShapes(tfds.core.GeneratorBasedBuilder):
    """Class-coloured noisy images (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [  # noqa: RUF012 (TFDS reads this class attribute)
        tfds.core.BuilderConfig(name="fixed", description="20x20, label 'label'"),
        tfds.core.BuilderConfig(name="photos", description="JPEGs of varying size, 'kind'"),
    ]

    def _info(self):
        if self.builder_config.name == "fixed":
            features = {
                "image": tfds.features.Image(shape=(20, 20, 3)),
                "label": tfds.features.ClassLabel(names=["red", "green", "blue"]),
            }
        else:
            features = {
                "photo": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "kind": tfds.features.ClassLabel(names=["red", "green", "blue"]),
                "caption": tfds.features.Text(),
            }
        # DatasetInfo directly: dataset_info_from_configs wants a package of metadata.
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing to download: the images are generated.
        splits = dict(SPLIT_SIZES)
        if self.builder_config.name == "photos":
            splits["extra"] = 6
        return {split: self._generate_examples(split, size) for split, size in splits.items()}

    def _generate_examples(self, split, size):
        rng = np.random.default_rng(len(split))
        for i in range(size):
            label = i % len(COLOURS)
            side = (20, 20) if self.builder_config.name == "fixed" else (24 + 4 * (i % 3), 30)
            noise = rng.integers(0, 30, (*side, 3))
            image = np.clip(np.asarray(COLOURS[label]) + noise, 0, 255).astype(np.uint8)
            if self.builder_config.name == "fixed":
                yield f"{split}_{i}", {"image": image, "label": label}
            else:
                yield f"{split}_{i}", {"photo": image, "kind": label, "caption": f"{i}"}
