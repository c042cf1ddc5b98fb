"""The tf.data input pipeline: deterministic, resumable, sharded across processes.

Training batches (`make_train_iterator`) are defined by a global order that does
not depend on how many processes read it:

- epoch e visits the examples of the split in the order of a permutation drawn
  statelessly from (seed, e); the last ``num_examples % global_batch_size``
  examples of that order are dropped, so every epoch has `steps_per_epoch` steps;
- global step s is epoch ``s // steps_per_epoch``, batch ``s % steps_per_epoch``;
  its global batch is the next ``global_batch_size`` indices of that permutation;
- process p of P takes the contiguous slice ``[p * B/P, (p+1) * B/P)`` of each
  global batch, so concatenating the local batches of processes 0..P-1 gives the
  global batch of a single process, exactly, views included;
- the views of an example depend only on (seed, example index, epoch, view)
  (`jaxcl.data.augment.view_seed`).

Resuming with ``start_step=s`` therefore yields exactly the batches s, s+1, ... of an
uninterrupted run; the skip happens on the index permutation, before any image is
read or augmented.

This holds for random-access sources (every dataset except ImageNet by default,
see `jaxcl.data.datasets`). ImageNet is streamed from its TFDS files: each process
reads its own ``tfds.even_splits`` part in an order seeded by (seed, epoch) and
resumes by skipping records before decoding; its batches are deterministic and
resumable for a fixed process count, but they change with the process count.
"""

import itertools
import logging
import math

import jax
import numpy as np
import tensorflow_datasets as tfds

from jaxcl.data import augment, datasets
from jaxcl.data._tf import tf

_EPOCH_KEY = 0xE90C  # Separates the permutation stream from the augmentation stream.


def _process_layout(global_batch_size, process_index, process_count):
    if process_index is None or process_count is None:
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not a positive multiple of "
            f"process_count {process_count}"
        )
    return process_index, process_count, global_batch_size // process_count


def _image_size(info, image_size):
    if image_size is None:
        image_size = info.default_image_size
    if isinstance(image_size, int):
        return (image_size, image_size)
    return tuple(int(x) for x in image_size)


def view_configs(preset, num_views, augment_options=None):
    """The `AugmentConfig` of each view of a pipeline (view v uses preset entry v % len).

    Args:
      preset: a preset name or a sequence of `AugmentConfig`.
      num_views: augmented views per example.
      augment_options: overrides for a named preset.

    Returns:
      A tuple of ``num_views`` `AugmentConfig`.
    """
    if isinstance(preset, str):
        configs = augment.get_preset(preset, **(augment_options or {}))
    else:
        configs = tuple(preset)
        if augment_options:
            raise ValueError("augment_options apply only to a preset given by name")
        if not configs or not all(isinstance(c, augment.AugmentConfig) for c in configs):
            raise ValueError("preset must be a name or a sequence of AugmentConfig")
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    return tuple(configs[v % len(configs)] for v in range(num_views))


def _options():
    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = True
    return options


def epoch_permutation(seed, epoch, num_examples):
    """The order in which epoch ``epoch`` visits a split (int64 tensor (num_examples,)).

    Args:
      seed: the data seed.
      epoch: the epoch (int or int64 scalar tensor).
      num_examples: the split's size.

    Returns:
      A permutation of ``range(num_examples)`` that depends only on (seed, epoch).
    """
    key = tf.constant([int(seed), _EPOCH_KEY], tf.int64)
    key = tf.random.experimental.stateless_fold_in(key, tf.cast(epoch, tf.int64))
    return tf.random.experimental.stateless_shuffle(
        tf.range(num_examples, dtype=tf.int64), seed=key
    )


def steps_per_epoch(
    dataset, split=None, global_batch_size=None, *, data_dir=None, dataset_options=None
):
    """Training steps per epoch: ``num_examples(split) // global_batch_size``.

    For a split named in the catalog (or a '+' join of such names) the count comes
    from `dataset_info` and nothing is read. Other split expressions (e.g.
    'train[:10%]') are counted by loading the split (cached for the iterator).
    `make_train_iterator` counts the examples it actually reads; with real data the
    two agree (with mocked data the iterator's own count wins).

    Args:
      dataset: a dataset name (see `jaxcl.data.DATASET_NAMES`).
      split: the split (default: the dataset's pretraining split).
      global_batch_size: examples per step summed over all processes.
      data_dir: TFDS data directory (only used when the split must be loaded).
      dataset_options: see `jaxcl.data.datasets.dataset_info`.

    Returns:
      int, at least 1.

    Raises:
      ValueError: if the split holds fewer than ``global_batch_size`` examples.
    """
    info = datasets.dataset_info(dataset, dataset_options, data_dir, prepare=True)
    split = split or info.pretrain_split
    try:
        num_examples = datasets.split_num_examples(info, split)
    except ValueError:
        num_examples = datasets.get_source(dataset, split, data_dir, dataset_options).num_examples
    return _steps(dataset, split, num_examples, global_batch_size)


def _steps(dataset, split, num_examples, global_batch_size):
    steps = num_examples // int(global_batch_size)
    if steps < 1:
        raise ValueError(
            f"{dataset} {split} has {num_examples} examples, fewer than "
            f"global_batch_size {global_batch_size}"
        )
    return steps


class DataIterator:
    """A Python iterator of dicts of NumPy arrays, with facts about its batches.

    Attributes:
      steps_per_epoch: global steps per epoch.
      local_batch_size: examples per batch of this process.
      start_step: the global step of the first batch.
      dataset: the underlying ``tf.data.Dataset`` (of the first epoch for streamed
        sources).
    """

    def __init__(self, iterator, dataset, steps_per_epoch, local_batch_size, start_step):
        self._iterator = iterator
        self.dataset = dataset
        self.steps_per_epoch = steps_per_epoch
        self.local_batch_size = local_batch_size
        self.start_step = start_step

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._iterator)


def make_train_iterator(
    dataset,
    *,
    split=None,
    preset,
    global_batch_size,
    image_size=None,
    num_views=2,
    seed=0,
    start_step=0,
    process_index=None,
    process_count=None,
    data_dir=None,
    dataset_options=None,
    augment_options=None,
    num_parallel_calls=None,
    augment_on_device=False,
    example_indices=None,
):
    """An infinite iterator of augmented multi-view training batches for this process.

    Follows the SimCLR input pipeline (Chen et al. 2020, arXiv:2002.05709): each
    example yields ``num_views`` independently augmented views. See the module
    docstring for the exact order of examples, sharding and resumption.

    Args:
      dataset: a name in `jaxcl.data.DATASET_NAMES`.
      split: the split to read (default: the dataset's pretraining split, e.g.
        'unlabelled' for stl10; '+' joins splits, e.g. 'unlabelled+train').
      preset: an augmentation preset name (`jaxcl.data.PRESET_NAMES`) or a sequence of
        `AugmentConfig` (view v uses entry v % len).
      global_batch_size: examples per step summed over all processes; must be a
        multiple of the process count.
      image_size: output side (int) or (height, width); default the dataset's.
      num_views: augmented views per example.
      seed: data seed: fixes the example order and every augmentation.
      start_step: global step of the first batch (for resuming).
      process_index: this process (default ``jax.process_index()``).
      process_count: number of processes (default ``jax.process_count()``).
      data_dir: TFDS data directory (default TFDS's).
      dataset_options: per-dataset options (see `jaxcl.data.datasets`).
      augment_options: overrides for a named preset, e.g.
        ``{'crop_scale': (0.3, 1.0), 'jitter_strength': 0.4, 'blur_prob': 0.0}``.
      num_parallel_calls: parallelism of the augmentation map (default AUTOTUNE).
      augment_on_device: draw only the geometric half of each view here (crop,
        resize, flip) and leave colour jitter, grayscale, blur and solarization to
        `jaxcl.data.device_augment.finish_views` in the train step.
      example_indices: read only these examples of the split (e.g. a labelled
        subset, `jaxcl.data.class_balanced_subset`): each epoch visits them in
        an order seeded by (seed, epoch), with ``len // global_batch_size``
        steps; random-access sources only.

    Returns:
      A `DataIterator` over dicts: ``views`` float32 (local_batch, num_views, H, W, C)
      in [0, 1], ``label`` int32 (local_batch,) (-1 for unlabelled data), ``index``
      int64 (local_batch,) (the example's index in the split; for streamed ImageNet
      a fingerprint of its TFDS id), with local_batch = global_batch_size //
      process_count. With ``augment_on_device``, ``views`` are the geometric views
      as uint8 (0..255) and ``view_keys`` uint32 (local_batch, num_views, 2) the
      keys of their photometric halves.

    Raises:
      ValueError: for unknown names, a batch size that does not divide, or a split
        smaller than one global batch.

    Example:
      >>> it = make_train_iterator("synthetic", preset="simclr_cifar",
      ...                          global_batch_size=8, process_count=1, process_index=0)
      >>> next(it)["views"].shape
      (8, 2, 32, 32, 3)
    """
    info = datasets.dataset_info(dataset, dataset_options, data_dir, prepare=True)
    split = split or info.pretrain_split
    process_index, process_count, local_batch = _process_layout(
        global_batch_size, process_index, process_count
    )
    size = _image_size(info, image_size)
    views = view_configs(preset, num_views, augment_options)
    if start_step < 0:
        raise ValueError(f"start_step must be >= 0, got {start_step}")
    source = datasets.get_source(dataset, split, data_dir, dataset_options)
    subset = _check_example_indices(example_indices, source, dataset, split)
    num_examples = source.num_examples if subset is None else len(subset)
    spe = _steps(dataset, split, num_examples, global_batch_size)
    try:
        expected = datasets.split_num_examples(info, split)
    except ValueError:  # A sliced split: nothing to compare with.
        expected = source.num_examples
    if expected != source.num_examples:
        logging.warning(
            "%s %s: read %d examples, the catalog says %d; steps_per_epoch() will differ "
            "from this iterator's %d steps per epoch",
            dataset, split, source.num_examples, expected, spe,
        )  # fmt: skip
    parallel = num_parallel_calls or tf.data.AUTOTUNE
    seed = int(seed)

    def augment_example(image, label, index, epoch):
        if augment_on_device:
            # Crops of the uint8 image: only the crop is converted, in the resize.
            geometric, keys = augment.geometric_views(image, views, seed, index, epoch, size)
            return {"views": geometric, "view_keys": keys, "label": label, "index": index}
        image = tf.image.convert_image_dtype(image, tf.float32)
        image = augment.augment_views(image, views, seed, index, epoch, size)
        return {"views": image, "label": label, "index": index}

    if not source.random_access:
        return _streaming_train_iterator(
            source,
            augment_example,
            spe,
            local_batch,
            process_index,
            process_count,
            seed,
            start_step,
            parallel,
        )

    start_epoch, skip = divmod(int(start_step), spe)

    def epoch_batches(epoch):
        order = epoch_permutation(seed, epoch, num_examples)[: spe * global_batch_size]
        if subset is not None:
            order = tf.gather(subset, order)
        local = tf.reshape(order, [spe, process_count, local_batch])[:, process_index]
        epochs = tf.fill([spe, local_batch], epoch)
        return tf.data.Dataset.from_tensor_slices((local, epochs))

    def load(index, epoch):
        image, label = source.get(index)
        return augment_example(image, label, index, epoch)

    ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch_batches).skip(skip)
    ds = ds.unbatch().map(load, num_parallel_calls=parallel, deterministic=True)
    ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    ds = ds.with_options(_options())
    return DataIterator(ds.as_numpy_iterator(), ds, spe, local_batch, int(start_step))


def _check_example_indices(example_indices, source, dataset, split):
    """``example_indices`` as an int64 tensor, or a one-line error; None stays None."""
    if example_indices is None:
        return None
    if not source.random_access:
        raise ValueError(
            f"example_indices needs a random-access source, and {dataset} {split} is "
            "streamed from its files; for ImageNet's 1% and 10% use TFDS's "
            "imagenet2012_subset, else a data set held in memory."
        )
    indices = np.asarray(example_indices)
    if indices.ndim != 1 or len(indices) == 0 or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(
            f"example_indices must be a non-empty 1-D integer array, got {indices.dtype} "
            f"{indices.shape}; pass e.g. class_balanced_subset(labels, fraction=0.01)."
        )
    if indices.min() < 0 or indices.max() >= source.num_examples:
        raise ValueError(
            f"example_indices run from {indices.min()} to {indices.max()}, outside the "
            f"{source.num_examples} examples of {dataset} {split}; pass indices of this split."
        )
    if len(np.unique(indices)) != len(indices):
        raise ValueError("example_indices repeats an example; pass each index once.")
    return tf.constant(indices, tf.int64)


def _epoch_shuffle_seed(seed, epoch):
    return int(np.random.SeedSequence([seed, _EPOCH_KEY, epoch]).generate_state(1)[0])


def _streaming_train_iterator(
    source,
    augment_example,
    spe,
    local_batch,
    process_index,
    process_count,
    seed,
    start_step,
    parallel,
):
    start_epoch, skip = divmod(int(start_step), spe)
    subsplit = tfds.even_splits(source.split, n=process_count)[process_index]

    def epoch_dataset(epoch, skip_batches):
        ds = source.read(subsplit, shuffle_seed=_epoch_shuffle_seed(seed, epoch))
        ds = ds.take(spe * local_batch).skip(skip_batches * local_batch)

        def load(encoded, label, index):
            return augment_example(source.decode(encoded), label, index, epoch)

        ds = ds.map(load, num_parallel_calls=parallel, deterministic=True)
        ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
        return ds.with_options(_options())

    first = epoch_dataset(start_epoch, skip)

    def batches():
        yield from first.as_numpy_iterator()
        for epoch in itertools.count(start_epoch + 1):
            yield from epoch_dataset(epoch, 0).as_numpy_iterator()

    return DataIterator(source.checked(batches()), first, spe, local_batch, int(start_step))


def make_eval_iterator(
    dataset,
    *,
    split=None,
    image_size=None,
    global_batch_size,
    process_index=None,
    process_count=None,
    data_dir=None,
    max_examples=None,
    dataset_options=None,
):
    """One pass over a split, without augmentation, in fixed-size padded batches.

    Preprocessing follows SimCLR's evaluation: a 0.875 center crop for ImageNet,
    none for small images, then a resize to ``image_size`` if it differs.

    Every batch has the same shape (the last is padded), so a jitted evaluation step
    compiles once; ``mask`` marks real examples. Random-access datasets: examples
    0..N-1 in stored order, process p taking its slice of each global batch (as in
    training). Streamed datasets: each process reads its ``tfds.even_splits`` part,
    and all processes yield the same number of batches.

    Args:
      dataset: a dataset name.
      split: the split (default: the dataset's evaluation test split).
      image_size: output side or (height, width) (default: the dataset's).
      global_batch_size: examples per batch summed over processes.
      process_index: this process (default ``jax.process_index()``).
      process_count: number of processes (default ``jax.process_count()``).
      data_dir: TFDS data directory.
      max_examples: read only the first ``max_examples`` examples.
      dataset_options: per-dataset options.

    Returns:
      An iterator of dicts: ``image`` float32 (local_batch, H, W, C) in [0, 1],
      ``label`` int32, ``index`` int64 and ``mask`` bool, each (local_batch,).
      Padding has mask False, label -1, index -1.
    """
    info = datasets.dataset_info(dataset, dataset_options, data_dir, prepare=True)
    split = split or info.eval_splits[1]
    process_index, process_count, local_batch = _process_layout(
        global_batch_size, process_index, process_count
    )
    size = _image_size(info, image_size)
    source = datasets.get_source(dataset, split, data_dir, dataset_options)

    def preprocess(image, label, index, mask):
        image = tf.image.convert_image_dtype(image, tf.float32)
        image = augment.preprocess_eval(image, size, info.eval_crop_fraction)
        return {"image": image, "label": label, "index": index, "mask": mask}

    if source.random_access:
        count = source.num_examples
        if max_examples is not None:
            count = min(count, int(max_examples))
        num_batches = math.ceil(count / global_batch_size)
        padded = np.full(num_batches * global_batch_size, -1, np.int64)
        padded[:count] = np.arange(count)
        local = padded.reshape(num_batches, process_count, local_batch)[:, process_index]

        def load(index):
            real = index >= 0
            image, label = source.get(tf.maximum(index, 0))
            label = tf.where(real, label, -1)
            return preprocess(image, label, index, real)

        ds = tf.data.Dataset.from_tensor_slices(local.reshape(-1))
    else:
        read_split = source.split
        count = source.num_examples
        if max_examples is not None and max_examples < count:
            read_split, count = f"{source.split}[:{int(max_examples)}]", int(max_examples)
        per_process = math.ceil(count / process_count)
        num_batches = math.ceil(per_process / local_batch)
        subsplit = tfds.even_splits(read_split, n=process_count)[process_index]
        ds = source.read(subsplit).map(lambda e, lab, i: (source.decode(e), lab, i, True))
        padding = tf.zeros([*size, info.image_shape[2]], tf.uint8)
        pad = tf.data.Dataset.from_tensors(
            (padding, tf.constant(-1, tf.int32), tf.constant(-1, tf.int64), False)
        ).repeat()
        ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.concatenate(pad.map(preprocess)).take(num_batches * local_batch)
        return source.checked(_finish_eval(ds, local_batch))

    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _finish_eval(ds, local_batch)


def _finish_eval(ds, local_batch):
    ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(_options()).as_numpy_iterator()


def make_eval_arrays(
    dataset,
    *,
    split=None,
    image_size=None,
    data_dir=None,
    max_examples=None,
    dataset_options=None,
    batch_size=1024,
):
    """A whole split as arrays, without augmentation, for linear probes and kNN.

    Same preprocessing as `make_eval_iterator` (SimCLR evaluation). Reads in this
    process only; fine for small datasets (Fashion-MNIST, CIFAR, STL-10).

    Args:
      dataset: a dataset name.
      split: the split (default: the dataset's evaluation test split).
      image_size: output side or (height, width) (default: the dataset's).
      data_dir: TFDS data directory.
      max_examples: keep only the first ``max_examples`` examples.
      dataset_options: per-dataset options.
      batch_size: read batch size (affects speed only).

    Returns:
      (images float32 (N, H, W, C) in [0, 1], labels int32 (N,)), in stored order.

    Example:
      >>> images, labels = make_eval_arrays("fashion_mnist", split="test")
      >>> images.shape, labels.shape
      ((10000, 28, 28, 1), (10000,))
    """
    batches = make_eval_iterator(
        dataset,
        split=split,
        image_size=image_size,
        global_batch_size=batch_size,
        process_index=0,
        process_count=1,
        data_dir=data_dir,
        max_examples=max_examples,
        dataset_options=dataset_options,
    )
    images, labels = [], []
    for batch in batches:
        images.append(batch["image"][batch["mask"]])
        labels.append(batch["label"][batch["mask"]])
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


__all__ = [
    "DataIterator",
    "epoch_permutation",
    "make_eval_arrays",
    "make_eval_iterator",
    "make_train_iterator",
    "steps_per_epoch",
    "view_configs",
]
