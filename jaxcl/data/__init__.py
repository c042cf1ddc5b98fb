"""Datasets, augmentations and the tf.data input pipeline of jaxcl.

Public API (TensorFlow is imported, with every accelerator hidden from it, on first
use of any of these names, not when ``jaxcl.data`` is imported):

- `make_train_iterator(dataset, *, split, preset, global_batch_size, image_size,
  num_views=2, seed=0, start_step=0, process_index=None, process_count=None,
  data_dir=None, dataset_options=None, augment_options=None)`: infinite,
  deterministic, resumable multi-view batches for this process.
- `make_eval_iterator(dataset, *, split, image_size, global_batch_size, ...)` and
  `make_eval_arrays(dataset, *, split, image_size, ...)`: unaugmented data.
- `steps_per_epoch(dataset, split, global_batch_size)`, `dataset_info(dataset)`.
- `DataSpec.from_config(config)`: all of the above for a training config, so that
  every consumer reads a run's data the same way; `eval_image_size(config)`: the
  side of its evaluation images (``eval.image_size``, else ``image_size``).
- `get_preset(name, ...)`, `AugmentConfig`: SimCLR / MoCo v2 / BYOL augmentations;
  `finish_views(views, view_keys, configs)`: their photometric half in JAX, for
  the batches of ``make_train_iterator(..., augment_on_device=True)``.
- `class_balanced_subset(labels, fraction=...)`, `subset_from_file(path, file_names)`:
  the labelled subsets of semi-supervised fine-tuning (SimCLR's 1% and 10%).
- `DATASET_NAMES` (besides which any TFDS name works), `PRESET_NAMES`.

Example:
  >>> from jaxcl import data
  >>> it = data.make_train_iterator("fashion_mnist", preset="fashion_mnist",
  ...                               global_batch_size=256)
  >>> batch = next(it)  # views (256, 2, 28, 28, 1), label (256,), index (256,)
"""

import importlib

_EXPORTS = {
    "make_train_iterator": "pipeline",
    "make_eval_iterator": "pipeline",
    "make_eval_arrays": "pipeline",
    "steps_per_epoch": "pipeline",
    "epoch_permutation": "pipeline",
    "DataIterator": "pipeline",
    "dataset_info": "datasets",
    "DatasetInfo": "datasets",
    "DATASET_NAMES": "datasets",
    "clear_cache": "datasets",
    "get_preset": "augment",
    "AugmentConfig": "augment",
    "PRESET_NAMES": "augment",
    "is_prepared": "datasets",
    "is_tfds_name": "datasets",
    "get_source": "datasets",
    "prepare_dataset": "datasets",
    "check_dataset_name": "datasets",
    "NotPreparedError": "datasets",
    "DataSourceError": "errors",
    "check_split": "datasets",
    "split_num_examples": "datasets",
    "DataSpec": "spec",
    "eval_image_size": "spec",
    "resolve_augment_on_device": "spec",
    "AUGMENT_ON_DEVICE_VALUES": "spec",
    "view_configs": "pipeline",
    "finish_views": "device_augment",
    "class_balanced_subset": "label_subsets",
    "subset_from_file": "label_subsets",
    "FashionMnistDebian": "fashion_mnist_debian",
    "FASHION_MNIST_CLASS_NAMES": "fashion_mnist_debian:CLASS_NAMES",
    "FASHION_MNIST_INSTALL_HINT": "fashion_mnist_debian:INSTALL_HINT",
    "fashion_mnist_files_exist": "fashion_mnist_debian:source_files_exist",
    "plot_augmentation_grid": "visualize",
}


def __getattr__(name):
    if name in _EXPORTS:
        module_name, _, attribute = _EXPORTS[name].partition(":")
        module = importlib.import_module(f"jaxcl.data.{module_name}")
        return getattr(module, attribute or name)
    raise AttributeError(f"module 'jaxcl.data' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])


__all__ = sorted(_EXPORTS)
