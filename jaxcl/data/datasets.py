"""Datasets by name and the sources the pipeline reads them from.

Names (see `DATASET_NAMES`):

- ``fashion_mnist``: the embedded default. Prepared offline from the Debian
  ``dataset-fashion-mnist`` IDX files by the ``fashion_mnist_debian`` TFDS builder
  (`jaxcl.data.fashion_mnist_debian`); without them, TFDS's ``fashion_mnist`` is
  downloaded; failing both, a one-line error names ``apt-get install
  dataset-fashion-mnist``.
- ``cifar10``, ``cifar100``: TFDS, downloaded on first use.
- ``stl10``: TFDS; pretrain on 'unlabelled' (or 'unlabelled+train'), evaluate on
  'train' / 'test'. Unlabelled examples have label -1.
- ``imagenet2012``: TFDS with the manual download (pass the tar files' directory as
  ``dataset_options={'manual_dir': ...}`` the first time).
- ``image_folder``: the user's own images under ``dataset_options={'root': DIR}``
  (a folder per class, optionally under split folders, or a flat unlabelled
  folder; see `jaxcl.data.image_folder`).
- ``synthetic``: images generated on the fly, deterministically, from
  ``dataset_options`` (``image_shape``, ``num_classes``, ``num_examples``); no disk.
- Any other name is a TFDS dataset (``oxford_flowers102``, ``dtd``,
  ``eurosat/rgb``, or one the user prepared with ``tfds build`` into
  ``data_dir``): its `DatasetInfo` comes from the prepared builder's info (splits,
  image feature, class label; see `dataset_info` for the options that name other
  features or splits). An unprepared one is prepared (downloaded) first.

Two kinds of source serve the pipeline:

- Random-access sources (`ArraySource` for datasets that fit in memory, i.e. all but
  ImageNet; `SyntheticSource`) map an example index to an image, so the pipeline
  shuffles indices, shards them across processes and resumes at any step exactly.
- `StreamingSource` (ImageNet, or any TFDS dataset with ``in_memory=False``) reads
  TFDS files in a seeded order.

Data directory: ``data_dir`` arguments default to TFDS's (``$TFDS_DATA_DIR`` or
``~/tensorflow_datasets``); Fashion-MNIST is written to
``<data_dir>/fashion_mnist_debian/1.0.0``.
"""

import contextlib
import dataclasses
import fcntl
import io
import logging
import math
import os
import threading
import time

import numpy as np
import tensorflow_datasets as tfds

from jaxcl import console
from jaxcl.data import fashion_mnist_debian, image_folder
from jaxcl.data._tf import hide_accelerators_from_tensorflow, tf
from jaxcl.data.errors import corrupt_prepared_dataset


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a named dataset.

    Attributes:
      name: the jaxcl name.
      num_examples: examples per split, from the TFDS catalog (for ``synthetic``,
        from its options). Splits can be combined with '+', e.g. 'unlabelled+train'.
      image_shape: (H, W, C) of the stored images; (None, None, 3) for ImageNet,
        whose images vary in size.
      num_classes: number of classes.
      pretrain_split: the split self-supervised pretraining uses by default.
      eval_splits: (train, test) splits for linear evaluation and kNN.
      default_image_size: the side the references train at.
      eval_crop_fraction: the center crop of evaluation (SimCLR: 0.875 on ImageNet,
        none on small images).
      labelled: whether examples have class labels (the probes need them).
      image_key: the TFDS feature holding the image.
      label_key: the TFDS feature holding the class label.
    """

    name: str
    num_examples: dict
    image_shape: tuple
    num_classes: int
    pretrain_split: str
    eval_splits: tuple[str, str]
    default_image_size: int
    eval_crop_fraction: float = 1.0
    labelled: bool = True
    image_key: str = "image"
    label_key: str = "label"


SYNTHETIC_DEFAULTS = {
    "image_shape": (32, 32, 3),
    "num_classes": 10,
    "num_examples": {"train": 10_000, "test": 2_000},
}

_CATALOG = {
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", {"train": 60_000, "test": 10_000}, (28, 28, 1), 10,
        "train", ("train", "test"), 28,
    ),
    "cifar10": DatasetInfo(
        "cifar10", {"train": 50_000, "test": 10_000}, (32, 32, 3), 10,
        "train", ("train", "test"), 32,
    ),
    "cifar100": DatasetInfo(
        "cifar100", {"train": 50_000, "test": 10_000}, (32, 32, 3), 100,
        "train", ("train", "test"), 32,
    ),
    "stl10": DatasetInfo(
        "stl10", {"train": 5_000, "test": 8_000, "unlabelled": 100_000}, (96, 96, 3), 10,
        "unlabelled", ("train", "test"), 96,
    ),
    "imagenet2012": DatasetInfo(
        "imagenet2012", {"train": 1_281_167, "validation": 50_000}, (None, None, 3), 1000,
        "train", ("train", "validation"), 224, eval_crop_fraction=0.875,
    ),
    "image_folder": None,  # Scanned from dataset_options['root'] by `dataset_info`.
    "synthetic": None,  # Built from dataset_options by `dataset_info`.
}  # fmt: skip
DATASET_NAMES = tuple(_CATALOG)  # Besides these, any TFDS name (see `dataset_info`).

# TFDS names of the datasets that are read through TFDS.
_TFDS_NAMES = {
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "stl10": "stl10",
    "imagenet2012": "imagenet2012",
}
_STREAMING_BY_DEFAULT = {"imagenet2012"}

_OPTIONS = {
    "synthetic": {"image_shape", "num_classes", "num_examples", "seed"},
    "fashion_mnist": {"source_dir", "in_memory", "shuffle_buffer"},
    "cifar10": {"in_memory", "shuffle_buffer"},
    "cifar100": {"in_memory", "shuffle_buffer"},
    "stl10": {"in_memory", "shuffle_buffer"},
    "imagenet2012": {"manual_dir", "in_memory", "shuffle_buffer"},
    "image_folder": {"root", "channels", "default_image_size", "eval_crop_fraction"},
}
# Options of a dataset named by its TFDS name.
_TFDS_OPTIONS = {
    "image_key", "label_key", "pretrain_split", "eval_splits", "default_image_size",
    "eval_crop_fraction", "manual_dir", "in_memory", "shuffle_buffer",
}  # fmt: skip
# Generic TFDS datasets are held in memory when all their splits' uint8 pixels fit.
_MAX_IN_MEMORY_BYTES = 4 * 2**30


def is_tfds_name(name):
    """Whether ``name`` is read as a TFDS dataset by its TFDS name (not a catalog name)."""
    return name not in _CATALOG


def _tfds_builder(name, data_dir):
    """``tfds.builder(name)``, or a one-line ValueError for a name TFDS does not know."""
    try:
        return tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # DatasetNotFoundError, bad config or version, ...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ValueError(
            f"unknown dataset {name!r}: not one of {', '.join(DATASET_NAMES)}, and TFDS "
            f"says: {first_line[:160]}; use a name of tfds.list_builders() or a dataset "
            f"prepared in data_dir={data_dir!r}"
        ) from None


def check_dataset_name(name, data_dir=None):
    """Raises a one-line ValueError unless ``name`` is in `DATASET_NAMES` or TFDS knows it.

    Cheap: a TFDS name only builds its builder object; nothing is downloaded.
    """
    if is_tfds_name(name):
        _tfds_builder(name, data_dir)


def _check_options(name, options):
    options = dict(options or {})
    valid = _OPTIONS.get(name, _TFDS_OPTIONS)
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"unknown dataset_options {unknown} for {name!r}; valid: {sorted(valid)}")
    return options


def _synthetic_num_examples(options):
    num_examples = options.get("num_examples", SYNTHETIC_DEFAULTS["num_examples"])
    if isinstance(num_examples, int):
        return {"train": num_examples, "test": num_examples}
    return dict(num_examples)


def dataset_info(dataset, dataset_options=None, data_dir=None, *, prepare=False):
    """Static facts about a dataset: examples per split, image shape, classes.

    The catalog's datasets need no data on disk (counts from the TFDS catalog;
    ``synthetic``: from ``dataset_options``; ``image_folder``: a scan of the
    folder). A dataset named by its TFDS name is described by its prepared
    builder's info in ``data_dir`` (split sizes exist only once prepared: see
    `prepare_dataset`).

    Args:
      dataset: one of `DATASET_NAMES`, or a TFDS name (``'dtd'``, ``'eurosat/rgb'``).
      dataset_options: for ``synthetic``: ``image_shape`` (default (32, 32, 3)),
        ``num_classes`` (10), ``num_examples`` (an int for every split or a dict per
        split; default train 10,000, test 2,000). For a TFDS name: ``image_key``
        ('image'), ``label_key`` ('label'; a feature the builder lacks makes the
        dataset unlabelled), ``pretrain_split`` ('train'), ``eval_splits`` ((train,
        test), test being 'test' or else 'validation'), ``default_image_size`` (the
        stored side, else 224), ``eval_crop_fraction`` (1.0 for fixed-size images,
        else SimCLR's 0.875), ``in_memory`` (default: when every split's pixels fit
        in 4 GiB), ``shuffle_buffer``, ``manual_dir``.
      data_dir: TFDS data directory (only read for TFDS names).
      prepare: prepare an unprepared TFDS dataset (`prepare_dataset`) instead of raising.

    Returns:
      A `DatasetInfo`.

    Raises:
      ValueError: for an unknown dataset name or option, or a TFDS dataset that
        is not prepared (`NotPreparedError`).

    Example:
      >>> dataset_info("fashion_mnist").num_examples["train"]
      60000
    """
    options = _check_options(dataset, dataset_options)
    if is_tfds_name(dataset):
        try:
            return _tfds_info(dataset, options, data_dir)
        except NotPreparedError:
            if not prepare:
                raise
        prepare_dataset(dataset, data_dir, options)
        return _tfds_info(dataset, options, data_dir)
    if dataset == "image_folder":
        return _image_folder_info(options)
    if dataset != "synthetic":
        return _CATALOG[dataset]
    shape = tuple(int(x) for x in options.get("image_shape", SYNTHETIC_DEFAULTS["image_shape"]))
    if len(shape) != 3:
        raise ValueError(f"synthetic image_shape must be (H, W, C), got {shape}")
    return DatasetInfo(
        "synthetic",
        _synthetic_num_examples(options),
        shape,
        int(options.get("num_classes", SYNTHETIC_DEFAULTS["num_classes"])),
        "train",
        ("train", "test"),
        shape[0],
    )


def _image_folder_info(options):
    if not options.get("root"):
        raise ValueError("image_folder needs dataset_options={'root': DIR}")
    splits, class_names = image_folder.scan(str(options["root"]))
    return DatasetInfo(
        "image_folder",
        {split: len(paths) for split, (paths, _) in splits.items()},
        (None, None, int(options.get("channels", 3))),
        max(1, len(class_names)),
        "train" if "train" in splits else next(iter(splits)),
        image_folder.eval_splits(splits),
        int(options.get("default_image_size", 224)),
        eval_crop_fraction=float(options.get("eval_crop_fraction", 1.0)),
        labelled=bool(class_names),
    )


class NotPreparedError(ValueError):
    """A TFDS dataset whose files (and so whose split sizes) are not in data_dir yet."""


_TFDS_INFO_CACHE = {}


def _tfds_info(name, options, data_dir):
    """`DatasetInfo` of a prepared TFDS dataset from its builder's info (cached)."""
    key = (name, str(data_dir), repr(sorted(options.items())))
    if key in _TFDS_INFO_CACHE:
        return _TFDS_INFO_CACHE[key]
    builder = _tfds_builder(name, data_dir)
    splits = {split: split_info.num_examples for split, split_info in builder.info.splits.items()}
    if not splits:
        raise NotPreparedError(
            f"TFDS dataset {name!r} is not prepared in data_dir={data_dir!r}; run a "
            f"training job with it (jaxcl prepares it), or: tfds build {name} "
            f"--data_dir={data_dir or '~/tensorflow_datasets'}"
        )
    features = builder.info.features
    image_key = options.get("image_key", "image")
    image_features = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    if image_key not in image_features:
        raise ValueError(
            f"{name!r} has no image feature {image_key!r}; set dataset_options "
            f"image_key to one of {image_features}"
        )
    label_key = options.get("label_key", "label")
    labelled = label_key in features and isinstance(features[label_key], tfds.features.ClassLabel)
    if "label_key" in options and not labelled:
        labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
        raise ValueError(
            f"{name!r} has no class label {label_key!r}; use one of {labels} or drop label_key"
        )
    shape = tuple(features[image_key].shape)
    fixed_size = None not in shape
    test_split = "test" if "test" in splits else "validation"
    first_split = "train" if "train" in splits else next(iter(splits))
    pretrain_split = options.get("pretrain_split", first_split)
    info = DatasetInfo(
        name,
        splits,
        shape,
        features[label_key].num_classes if labelled else 1,
        pretrain_split,
        tuple(options.get("eval_splits", (pretrain_split, test_split))),
        int(options.get("default_image_size", shape[0] if fixed_size else 224)),
        eval_crop_fraction=float(options.get("eval_crop_fraction", 1.0 if fixed_size else 0.875)),
        labelled=labelled,
        image_key=image_key,
        label_key=label_key,
    )
    if len(info.eval_splits) != 2:
        raise ValueError(f"eval_splits of {name!r} must be (train, test), got {info.eval_splits}")
    _TFDS_INFO_CACHE[key] = info
    return info


def _default_in_memory(dataset, info):
    if not is_tfds_name(dataset):
        return dataset not in _STREAMING_BY_DEFAULT
    if None in info.image_shape:
        return False
    return sum(info.num_examples.values()) * math.prod(info.image_shape) <= _MAX_IN_MEMORY_BYTES


def split_num_examples(info, split):
    """Examples in ``split`` per the catalog, summing '+'-joined splits."""
    check_split(info, split)
    parts = [part.strip() for part in split.split("+")]
    if any("[" in part for part in parts):
        raise ValueError(f"cannot count the sliced split {split!r} of {info.name!r} statically")
    return sum(info.num_examples[part] for part in parts)


def check_split(info, split):
    """Raises a one-line ValueError unless every split named in ``split`` exists.

    Accepts TFDS split expressions: '+' joins and slices such as 'train[:10%]'
    (only the names are checked here; TFDS checks the slices).
    """
    for part in split.split("+"):
        name = part.split("[")[0].strip()
        if name not in info.num_examples:
            raise ValueError(
                f"unknown split {name!r} of {info.name!r}; valid: {', '.join(info.num_examples)}"
            )


# --------------------------------------------------------------------------- sources


class ArraySource:
    """A split held in host memory: uint8 images (N, H, W, C), int32 labels (N,).

    Index i is the i-th example in TFDS's stored order of the split.
    """

    random_access = True

    def __init__(self, name, split, images, labels, info):
        self.name, self.split, self.info = name, split, info
        self.images_np, self.labels_np = images, labels
        self.num_examples = len(labels)
        self.image_shape = tuple(images.shape[1:])
        # Captured by reference in the tf.data functions: no copy, no 2 GB limit.
        with tf.device("/cpu:0"):
            self._images = tf.constant(images)
            self._labels = tf.constant(labels)

    def get(self, index):
        """Returns (uint8 image (H, W, C), int32 label) of an int64 index tensor."""
        return tf.gather(self._images, index), tf.gather(self._labels, index)


class SyntheticSource:
    """Deterministic random images, generated when read.

    Each class has a smooth random pattern (8x8 noise resized to the image size);
    an image is its class's pattern plus per-example uniform noise, so a model can
    learn the labels. Example i of a split has label i % num_classes; its pixels
    depend only on (options seed, split, i).
    """

    random_access = True

    def __init__(self, split, info, seed=0):
        self.name, self.split, self.info = "synthetic", split, info
        self.num_examples = split_num_examples(info, split)
        self.image_shape = info.image_shape
        self._num_classes = info.num_classes
        self.labels_np = (np.arange(self.num_examples) % info.num_classes).astype(np.int32)
        split_id = int.from_bytes(split.encode()[:7].ljust(7, b"\0"), "little")
        self._key = tf.constant([int(seed), split_id], tf.int64)
        self._class_key = tf.constant([int(seed), -1], tf.int64)

    def get(self, index):
        """Returns (uint8 image (H, W, C), int32 label) of an int64 index tensor."""
        height, width, channels = self.image_shape
        label = tf.cast(index % self._num_classes, tf.int32)
        class_seed = tf.random.experimental.stateless_fold_in(self._class_key, label)
        pattern = tf.random.stateless_uniform([8, 8, channels], seed=class_seed)
        pattern = tf.image.resize(pattern, [height, width], method="bilinear")
        noise_seed = tf.random.experimental.stateless_fold_in(self._key, index)
        noise = tf.random.stateless_uniform([height, width, channels], seed=noise_seed)
        image = 0.6 * pattern + 0.4 * noise
        return tf.cast(image * 255.0, tf.uint8), label


class StreamingSource:
    """A TFDS split read from its files (for datasets too large for memory)."""

    random_access = False

    def __init__(self, name, split, builder, info, shuffle_buffer=10_000):
        self.name, self.split, self.info, self.builder = name, split, info, builder
        self.shuffle_buffer = shuffle_buffer
        self.num_examples = int(builder.as_dataset(split=split).cardinality())
        if self.num_examples < 0:  # Unknown cardinality: use the recorded split sizes.
            self.num_examples = builder.info.splits[split].num_examples
        self.image_shape = info.image_shape
        self._image_feature = builder.info.features[info.image_key]
        self._encoded = isinstance(self._image_feature, tfds.features.Image)

    def read(self, split, *, shuffle_seed=None):
        """Dataset of (encoded image or uint8 image, int32 label, int64 index).

        The index is a 62-bit fingerprint of TFDS's ``tfds_id``: stable across runs
        and process counts, unique in practice.

        Args:
          split: a TFDS split expression (a process's sub-split).
          shuffle_seed: None for the stored order; else shuffle files and examples
            deterministically with this seed.
        """
        read_config = tfds.ReadConfig(
            add_tfds_id=True,
            shuffle_seed=shuffle_seed,
            shuffle_reshuffle_each_iteration=False,
        )
        decoders = {self.info.image_key: tfds.decode.SkipDecoding()} if self._encoded else None
        ds = self.builder.as_dataset(
            split=split,
            shuffle_files=shuffle_seed is not None,
            read_config=read_config,
            decoders=decoders,
        )
        if shuffle_seed is not None:
            ds = ds.shuffle(self.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)

        def parse(example):
            index = tf.strings.to_hash_bucket_fast(example["tfds_id"], 2**62)
            return example[self.info.image_key], _example_label(example, self.info), index

        return ds.map(parse)

    def checked(self, batches):
        """Yields from ``batches`` (NumPy batches of `read`), naming the files if corrupt.

        Raises:
          jaxcl.data.errors.DataSourceError: TensorFlow's ``DataLossError``.
        """
        return _checked_reads(batches, self.builder)

    def decode(self, image):
        """Decodes what `read` yields into a uint8 (H, W, C) image."""
        if self._encoded:
            return self._image_feature.decode_example(image)
        return image


_CACHE = {}
_CACHE_LOCK = threading.Lock()


@contextlib.contextmanager
def _preparation_lock(builder):
    """Serialises preparation across processes sharing a data_dir (multi-process runs).

    TFDS writes into a temporary directory and renames it; two processes doing that
    at once for the same dataset would collide, so the first prepares while the
    others wait and then find the dataset prepared.
    """
    root = os.path.dirname(os.path.dirname(os.fspath(builder.data_dir)))
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, f".{builder.name}.jaxcl.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _prepared(make_builder, download_config=None):
    """Returns ``make_builder()`` after preparing it once (under the lock) if needed."""
    builder = make_builder()
    if builder.is_prepared():
        return builder
    with _preparation_lock(builder):
        builder = make_builder()  # Another process may have prepared it meanwhile.
        if not builder.is_prepared():
            started = time.perf_counter()
            # TFDS prints its own lines to stdout, meant for a dataset downloaded
            # by hand; on a run's terminal one line says what happened.
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                builder.download_and_prepare(download_config=download_config)
            if printed.getvalue().strip():
                logging.info("TFDS: %s", printed.getvalue().strip())
            console.say(
                "prepared %s in %s in %.0f s (first use; later runs read it from there)",
                builder.name, builder.data_dir, time.perf_counter() - started,
            )  # fmt: skip
    return make_builder()


def _prepare_builder(name, data_dir, options):
    """The prepared TFDS builder of a dataset, preparing it if needed."""
    if name == "fashion_mnist":
        return _fashion_mnist_builder(data_dir, options)
    download_config = None
    if options.get("manual_dir"):
        download_config = tfds.download.DownloadConfig(manual_dir=options["manual_dir"])
    tfds_name = _TFDS_NAMES.get(name, name)
    try:
        return _prepared(lambda: _tfds_builder(tfds_name, data_dir), download_config)
    except Exception as error:
        manual = name == "imagenet2012" or getattr(
            _tfds_builder(tfds_name, data_dir), "MANUAL_DOWNLOAD_INSTRUCTIONS", None
        )
        hint = " (pass dataset_options={'manual_dir': ...})" if manual else ""
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise RuntimeError(
            f"cannot prepare {name!r} in {data_dir or 'the TFDS data_dir'}{hint}: "
            f"{type(error).__name__}: {message[:200]}"
        ) from error


def _fashion_mnist_builder(data_dir, options):
    source_dir = options.get("source_dir", fashion_mnist_debian.DEFAULT_SOURCE_DIR)
    if fashion_mnist_debian.source_files_exist(source_dir):
        return _prepared(
            lambda: fashion_mnist_debian.FashionMnistDebian(data_dir=data_dir),
            tfds.download.DownloadConfig(manual_dir=source_dir),
        )
    try:
        return _prepared(lambda: tfds.builder("fashion_mnist", data_dir=data_dir))
    except Exception as error:
        raise RuntimeError(
            f"Fashion-MNIST unavailable: no IDX files in {source_dir} "
            f"(run: {fashion_mnist_debian.INSTALL_HINT}) and the TFDS download failed "
            f"({type(error).__name__})"
        ) from error


def _example_label(example, info):
    """The int32 label of a TFDS example; -1 for a dataset without labels."""
    if not info.labelled:
        return tf.constant(-1, tf.int32)
    return tf.cast(example[info.label_key], tf.int32)


def _load_arrays(builder, split, info):
    num_classes = info.num_classes
    ds = builder.as_dataset(split=split, shuffle_files=False)
    ds = ds.map(lambda x: (x[info.image_key], _example_label(x, info))).batch(8192)
    images, labels = [], []
    for image_batch, label_batch in _checked_reads(tfds.as_numpy(ds), builder):
        images.append(image_batch)
        labels.append(label_batch)
    if not labels:
        raise ValueError(f"split {split!r} of {builder.name} is empty")
    images, labels = np.concatenate(images), np.concatenate(labels)
    if images.ndim == 3:
        images = images[..., None]
    if labels.max() >= num_classes or labels.min() < -1:
        raise ValueError(f"{builder.name} {split}: labels outside [-1, {num_classes})")
    return images, labels


def _checked_reads(batches, builder):
    """Yields from ``batches``, a read of ``builder``'s files, naming them if they are corrupt."""
    try:
        yield from batches
    except tf.errors.DataLossError as error:
        raise corrupt_prepared_dataset(builder.name, os.fspath(builder.data_dir), error) from None


def get_source(dataset, split, data_dir=None, dataset_options=None):
    """The source of a split, loading and caching it on first use.

    Args:
      dataset: one of `DATASET_NAMES`.
      split: a split name, or '+'-joined names (TFDS split syntax for TFDS datasets).
      data_dir: TFDS data directory (None: TFDS's default).
      dataset_options: per-dataset options, see `dataset_info` and the module doc;
        ``in_memory`` (bool) chooses between `ArraySource` and `StreamingSource`.

    Returns:
      An `ArraySource`, `SyntheticSource` or `StreamingSource`.
    """
    hide_accelerators_from_tensorflow()  # before TensorFlow's first op
    options = _check_options(dataset, dataset_options)
    info = dataset_info(dataset, dataset_options, data_dir, prepare=True)
    if dataset == "synthetic":
        return SyntheticSource(split, info, seed=options.get("seed", 0))
    check_split(info, split)
    if dataset == "image_folder":
        return _folder_source(split, info, options)
    in_memory = options.get("in_memory", _default_in_memory(dataset, info))
    key = (dataset, split, str(data_dir), in_memory, repr(sorted(options.items())))
    with _CACHE_LOCK:
        if key not in _CACHE:
            builder = _prepare_builder(dataset, data_dir, options)
            if in_memory:
                images, labels = _load_arrays(builder, split, info)
                _CACHE[key] = ArraySource(dataset, split, images, labels, info)
            else:
                buffer = options.get("shuffle_buffer", 10_000)
                _CACHE[key] = StreamingSource(dataset, split, builder, info, buffer)
        return _CACHE[key]


def _folder_source(split, info, options):
    splits, _ = image_folder.scan(str(options["root"]))
    if "[" in split:
        raise ValueError(f"image_folder splits cannot be sliced: {split!r}")
    paths, labels = [], []
    for part in split.split("+"):
        part_paths, part_labels = splits[part.strip()]
        paths += part_paths
        labels += part_labels
    return image_folder.FolderSource(split, paths, labels, info, info.image_shape[2])


def is_prepared(dataset, data_dir=None):
    """Whether the TFDS files of ``dataset`` are already prepared in ``data_dir``.

    Args:
      dataset: a TFDS-backed name of `DATASET_NAMES` (not ``synthetic``) or a TFDS name.
      data_dir: TFDS data directory (None: TFDS's default).

    Returns:
      bool; nothing is downloaded or prepared.
    """
    return _tfds_builder(_TFDS_NAMES.get(dataset, dataset), data_dir).is_prepared()


def prepare_dataset(dataset, data_dir=None, dataset_options=None):
    """Prepares (downloads and converts) a TFDS-backed dataset unless it is prepared.

    Safe to call from every process of a run at once (one prepares, the others
    wait). A no-op for ``synthetic`` and ``image_folder``.

    Args:
      dataset: a dataset name (see `dataset_info`).
      data_dir: TFDS data directory (None: TFDS's default).
      dataset_options: the dataset's options (``manual_dir`` is used).

    Raises:
      RuntimeError: when TFDS cannot prepare it (one line, with TFDS's reason).
    """
    if dataset in ("synthetic", "image_folder"):
        return
    options = _check_options(dataset, dataset_options)
    if dataset == "fashion_mnist" or not is_prepared(dataset, data_dir):
        _prepare_builder(dataset, data_dir, options)


def clear_cache():
    """Forgets every loaded split and TFDS dataset info (frees host memory; the next
    use reloads, and sees a dataset prepared again meanwhile)."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _TFDS_INFO_CACHE.clear()


__all__ = [
    "DATASET_NAMES",
    "ArraySource",
    "DatasetInfo",
    "NotPreparedError",
    "StreamingSource",
    "SyntheticSource",
    "check_dataset_name",
    "check_split",
    "clear_cache",
    "dataset_info",
    "get_source",
    "is_prepared",
    "is_tfds_name",
    "prepare_dataset",
    "split_num_examples",
]
