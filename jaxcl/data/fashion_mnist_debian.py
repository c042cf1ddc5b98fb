"""Fashion-MNIST prepared offline from the IDX files of the Debian package.

Debian's ``dataset-fashion-mnist`` package installs the original IDX files of
Xiao, Rasul & Vollgraf (2017, arXiv:1708.07747) under
``/usr/share/datasets/fashion-mnist``. They are recompressed, so TFDS's own
``fashion_mnist`` checksums do not match them and TFDS would try to download. This
module registers a separate TFDS builder, ``fashion_mnist_debian``, that reads those
files (after checking the decompressed headers and sizes) and writes an ordinary
TFDS dataset, which is then read through the usual ``tfds`` / ``tf.data`` path.

Example::

    builder = FashionMnistDebian(data_dir="/tmp/tfds")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=DEFAULT_SOURCE_DIR))
    train = builder.as_dataset(split="train")

Images are stored as raw ``uint8`` tensors of shape (28, 28, 1) rather than PNG:
encoding 70,000 PNGs dominates preparation time, and the raw bytes (784 per image)
are about as small as the PNGs.
"""

import gzip
import os
import zlib
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from jaxcl.data._tf import tf  # noqa: F401  (hides accelerators before TFDS uses TF)
from jaxcl.data.errors import DataSourceError

DEFAULT_SOURCE_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "apt-get install dataset-fashion-mnist"
REINSTALL_HINT = "apt-get install --reinstall dataset-fashion-mnist"

IMAGE_SIZE = 28
_IMAGES_MAGIC = 2051  # IDX: 0x00000803, unsigned byte, 3 dimensions.
_LABELS_MAGIC = 2049  # IDX: 0x00000801, unsigned byte, 1 dimension.
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60_000),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10_000),
}
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _read_gzip(path):
    """The decompressed bytes of a source file; a one-line error if it is cut short."""
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise DataSourceError(
            f"{path} is truncated or corrupt ({type(error).__name__}: {error}); "
            f"reinstall it ({REINSTALL_HINT}) or point dataset_options.source_dir at good copies"
        ) from None


def read_idx_images(path, num_examples):
    """Reads and validates a gzipped IDX image file.

    Args:
      path: path of ``*-images-idx3-ubyte.gz``.
      num_examples: the number of images the file must hold.

    Returns:
      uint8 array of shape (num_examples, 28, 28).

    Raises:
      ValueError: if the magic number, the dimensions or the byte count is wrong
        (train images must decompress to 16 + 60000 * 784 = 47,040,016 bytes).
    """
    data = _read_gzip(path)
    expected = 16 + num_examples * IMAGE_SIZE * IMAGE_SIZE
    header = np.frombuffer(data[:16], dtype=">u4")
    if len(data) != expected or header.tolist() != [
        _IMAGES_MAGIC,
        num_examples,
        IMAGE_SIZE,
        IMAGE_SIZE,
    ]:
        raise DataSourceError(
            f"{path}: not a Fashion-MNIST IDX image file of {num_examples} images "
            f"(header {header.tolist()}, {len(data)} bytes, expected {expected}); reinstall it "
            f"({REINSTALL_HINT}) or point dataset_options.source_dir at good copies"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(
        num_examples, IMAGE_SIZE, IMAGE_SIZE
    )


def read_idx_labels(path, num_examples):
    """Reads and validates a gzipped IDX label file.

    Args:
      path: path of ``*-labels-idx1-ubyte.gz``.
      num_examples: the number of labels the file must hold.

    Returns:
      uint8 array of shape (num_examples,) with values in [0, 10).

    Raises:
      ValueError: on a wrong magic number, count, byte size or label value.
    """
    data = _read_gzip(path)
    header = np.frombuffer(data[:8], dtype=">u4")
    if len(data) != 8 + num_examples or header.tolist() != [_LABELS_MAGIC, num_examples]:
        raise DataSourceError(
            f"{path}: not a Fashion-MNIST IDX label file of {num_examples} labels "
            f"(header {header.tolist()}, {len(data)} bytes); reinstall it ({REINSTALL_HINT}) "
            "or point dataset_options.source_dir at good copies"
        )
    labels = np.frombuffer(data, dtype=np.uint8, offset=8)
    if labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"{path}: label {labels.max()} out of range [0, {len(CLASS_NAMES)})")
    return labels


def read_split(source_dir, split):
    """Reads one split ('train' or 'test') of the IDX files in ``source_dir``.

    Args:
      source_dir: directory holding the four ``*-ubyte.gz`` files.
      split: 'train' (60,000 examples) or 'test' (10,000 examples).

    Returns:
      (images uint8 (N, 28, 28), labels uint8 (N,)).
    """
    images_file, labels_file, num_examples = _FILES[split]
    images = read_idx_images(os.path.join(source_dir, images_file), num_examples)
    labels = read_idx_labels(os.path.join(source_dir, labels_file), num_examples)
    return images, labels


def source_files_exist(source_dir=DEFAULT_SOURCE_DIR):
    """Whether all four Fashion-MNIST IDX files are present in ``source_dir``."""
    return all(
        os.path.isfile(os.path.join(source_dir, name))
        for images_file, labels_file, _ in _FILES.values()
        for name in (images_file, labels_file)
    )


class FashionMnistDebian(tfds.core.GeneratorBasedBuilder):
    """TFDS builder for Fashion-MNIST from the Debian ``dataset-fashion-mnist`` files.

    Registered as ``fashion_mnist_debian`` (so it never shadows TFDS's own
    ``fashion_mnist``). The source directory is TFDS's manual directory
    (``DownloadConfig(manual_dir=...)``); when none is given, or it lacks the files,
    ``/usr/share/datasets/fashion-mnist`` is used.

    Features: ``image`` uint8 (28, 28, 1), ``label`` ClassLabel with 10 classes.
    Splits: train (60,000), test (10,000), in the original file order.
    """

    VERSION = tfds.core.Version("1.0.0")
    # TFDS 4.9.10 computes `code_path` with `importlib_resources`, which it only
    # installs on Python < 3.9; naming the file directly avoids that import.
    code_path = epath.Path(__file__)
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Prepared from the Debian IDX files, raw uint8 images."
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Install the Debian package ({INSTALL_HINT}); its IDX files in "
        f"{DEFAULT_SOURCE_DIR} are used, or pass DownloadConfig(manual_dir=...)."
    )

    def _info(self):
        return self.dataset_info_from_configs(
            description="Fashion-MNIST (Xiao et al. 2017) from the Debian IDX files.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(
                        shape=(IMAGE_SIZE, IMAGE_SIZE, 1),
                        dtype=np.uint8,
                        encoding=tfds.features.Encoding.BYTES,
                    ),
                    "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    def _source_dir(self, dl_manager):
        try:
            manual_dir = os.fspath(dl_manager.manual_dir)
        except AssertionError:  # TFDS asserts that the manual dir exists.
            manual_dir = None
        if manual_dir and source_files_exist(manual_dir):
            return manual_dir
        if source_files_exist(DEFAULT_SOURCE_DIR):
            return DEFAULT_SOURCE_DIR
        raise FileNotFoundError(
            f"Fashion-MNIST IDX files not found in {manual_dir or DEFAULT_SOURCE_DIR}: "
            f"{INSTALL_HINT}"
        )

    def _split_generators(self, dl_manager):
        source_dir = self._source_dir(dl_manager)
        return {split: self._generate_examples(source_dir, split) for split in _FILES}

    def _generate_examples(self, source_dir, split):
        images, labels = read_split(source_dir, split)
        for i in range(len(labels)):
            yield i, {"image": images[i, :, :, None], "label": int(labels[i])}
