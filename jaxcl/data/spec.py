"""One description of a run's data, built from its config and used by every consumer.

The trainer, the end-of-run evaluation, the kNN monitor, the baselines, the plots
and the benchmarks all read a run's data through a ``DataSpec``: the same
dataset, splits, data directory, options, image size and augmentation, so that
no caller copies the keyword plumbing of ``make_train_iterator`` by hand (and
none can drop ``data_dir`` on the way).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from jaxcl.data import datasets, pipeline

AUGMENT_ON_DEVICE_VALUES = ("auto", "true", "false")
# 'auto' on CPU: the measured choice for the Fashion-MNIST default (docs/benchmarks.md).
_AUTO_ON_CPU = False


def _as_dict(section) -> dict:
    return dict(section) if section else {}


def resolve_augment_on_device(value: str, backend: str | None = None) -> bool:
    """Whether the photometric augmentations run in the train step (``config.augment_on_device``).

    ``'auto'`` is on for GPUs and TPUs, where the host's cores would otherwise
    bound the step. On CPU the host and the device share the same cores;
    ``_AUTO_ON_CPU`` holds the faster choice for the Fashion-MNIST default
    (measured with bench/first_step.py, docs/benchmarks.md).

    Args:
      value: ``'auto'``, ``'true'`` or ``'false'``.
      backend: the JAX platform (default ``jax.default_backend()``).

    Returns:
      bool.
    """
    if value not in AUGMENT_ON_DEVICE_VALUES:
        raise ValueError(f"augment_on_device={value!r} is unknown; use 'auto', 'true' or 'false'.")
    if value == "auto":
        backend = backend or jax.default_backend()
        return backend != "cpu" or _AUTO_ON_CPU
    return value == "true"


def eval_image_size(config) -> int:
    """The side of a run's evaluation images: ``eval.image_size``, else ``image_size``."""
    return config.eval.image_size or config.image_size


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a run reads: dataset, splits, sizes, augmentation and seed.

    Attributes:
      dataset: a name in ``jaxcl.data.DATASET_NAMES`` or a TFDS name.
      train_split: the pretraining split (None: the dataset's own).
      eval_train_split: the split the linear probe and kNN are fitted on (the
        dataset's ``eval_splits[0]`` unless the config names one).
      eval_test_split: the split they are scored on (``eval_splits[1]``: e.g.
        ImageNet's 'validation').
      data_dir: the TFDS data directory (None: TFDS's default).
      dataset_options: per-dataset options (see ``jaxcl.data.datasets``).
      image_size: the side of the (cropped, resized) training images.
      eval_image_size: the side of the un-augmented evaluation images.
      augmentation: the augmentation preset.
      augment_options: overrides of the preset.
      num_views: augmented views per training example.
      global_batch_size: training examples per step over all processes.
      seed: the data seed (example order and every augmentation).
      augment_on_device: the training batches carry geometric uint8 views and
        keys, finished in the train step (`jaxcl.data.device_augment`).
    """

    dataset: str
    train_split: str | None
    eval_train_split: str
    eval_test_split: str
    data_dir: str | None
    dataset_options: dict[str, Any]
    image_size: int
    eval_image_size: int
    augmentation: str
    augment_options: dict[str, Any]
    num_views: int
    global_batch_size: int
    seed: int
    augment_on_device: bool = False

    @classmethod
    def from_config(cls, config) -> DataSpec:
        """The data of a training config (``jaxcl.config.default_config`` keys)."""
        info = datasets.dataset_info(
            config.dataset, _as_dict(config.dataset_options), config.data_dir or None
        )
        return cls(
            dataset=config.dataset,
            train_split=config.train_split or None,
            eval_train_split=config.eval_train_split or info.eval_splits[0],
            eval_test_split=config.eval_test_split or info.eval_splits[1],
            data_dir=config.data_dir or None,
            dataset_options=_as_dict(config.dataset_options),
            image_size=config.image_size,
            eval_image_size=eval_image_size(config),
            augmentation=config.augmentation,
            augment_options=_as_dict(config.augment_options),
            num_views=config.num_views,
            global_batch_size=config.global_batch_size,
            seed=config.seed,
            augment_on_device=resolve_augment_on_device(config.augment_on_device),
        )

    @property
    def info(self) -> datasets.DatasetInfo:
        """The dataset's static facts (classes, image shape, splits)."""
        return datasets.dataset_info(self.dataset, self.dataset_options, self.data_dir)

    def steps_per_epoch(self) -> int:
        """Training steps per epoch of the pretraining split at the global batch size."""
        return pipeline.steps_per_epoch(
            self.dataset,
            self.train_split,
            self.global_batch_size,
            data_dir=self.data_dir,
            dataset_options=self.dataset_options,
        )

    def view_configs(self) -> tuple:
        """The `AugmentConfig` of each training view (what `finish_views` is given)."""
        return pipeline.view_configs(self.augmentation, self.num_views, self.augment_options)

    def train_iterator(self, start_step: int = 0, **overrides) -> pipeline.DataIterator:
        """The augmented training batches of this process from ``start_step`` on.

        Args:
          start_step: the global step of the first batch (for resuming).
          **overrides: arguments of ``make_train_iterator`` that differ from the
            run's (e.g. ``split``, ``global_batch_size``, ``num_views``, ``seed``,
            ``process_index``/``process_count`` for one process's view, or
            ``augment_on_device=False`` for finished views on the host).

        Returns:
          A ``DataIterator``; see ``jaxcl.data.make_train_iterator``.
        """
        arguments = {
            "split": self.train_split,
            "preset": self.augmentation,
            "global_batch_size": self.global_batch_size,
            "image_size": self.image_size,
            "num_views": self.num_views,
            "seed": self.seed,
            "data_dir": self.data_dir,
            "dataset_options": self.dataset_options,
            "augment_options": self.augment_options,
            "augment_on_device": self.augment_on_device,
            **overrides,
        }
        return pipeline.make_train_iterator(self.dataset, start_step=start_step, **arguments)

    def eval_arrays(self, split: str, max_examples: int = 0):
        """Un-augmented images and labels of ``split`` as host arrays.

        Args:
          split: a split of the dataset (e.g. ``eval_test_split``).
          max_examples: at most this many (the first ones); 0 for all.

        Returns:
          ``(images, labels)``: float32 (N, H, W, C) in [0, 1] and int32 (N,).
        """
        return pipeline.make_eval_arrays(
            self.dataset,
            split=split,
            image_size=self.eval_image_size,
            data_dir=self.data_dir,
            dataset_options=self.dataset_options,
            max_examples=max_examples or None,
        )

    def eval_iterator(self, split: str, global_batch_size: int, max_examples: int = 0):
        """Padded, masked evaluation batches of ``split`` for this process.

        See ``jaxcl.data.make_eval_iterator``.
        """
        return pipeline.make_eval_iterator(
            self.dataset,
            split=split,
            image_size=self.eval_image_size,
            global_batch_size=global_batch_size,
            data_dir=self.data_dir,
            dataset_options=self.dataset_options,
            max_examples=max_examples or None,
        )
