"""Users' own images: ``dataset='image_folder'`` with ``dataset_options={'root': DIR}``.

Three layouts of ``DIR`` are recognised (PNG, JPEG, BMP or GIF files, any size):

- ``DIR/<split>/<class>/<image>``: splits (``train``, ``test``, ...) of labelled
  images, the layout of ``tfds.ImageFolder``;
- ``DIR/<class>/<image>``: one labelled split, ``train``;
- ``DIR/<image>``: one unlabelled split, ``train`` (labels -1): pretraining
  only, since the probes need labels.

Classes are the sorted names of the class directories over all splits, so a
class gets the same label in every split. Images are decoded when read (random
access by index, like the in-memory datasets: exact resume and sharding over
processes) to ``channels`` channels; the augmentations crop and resize them.
Evaluation scores the ``test`` split, else ``validation``, else ``train``
itself (then the README's numbers are training accuracy: add a test folder).
The root may be on any filesystem TensorFlow reads (gs:// included).
"""

from __future__ import annotations

import functools

import numpy as np

from jaxcl.data._tf import tf

__all__ = ["IMAGE_EXTENSIONS", "FolderSource", "scan"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _images_in(directory: str) -> list[str]:
    names = tf.io.gfile.listdir(directory)
    return sorted(f"{directory}/{name}" for name in names if _is_image(name))


def _subdirectories(directory: str) -> list[str]:
    # Only entries that are not images are asked about: one request each on gs://.
    names = (name.rstrip("/") for name in tf.io.gfile.listdir(directory) if not _is_image(name))
    return sorted(name for name in names if tf.io.gfile.isdir(f"{directory}/{name}"))


@functools.lru_cache(maxsize=16)
def scan(root: str):
    """The splits, files and classes of an image folder (cached per root).

    Args:
      root: the folder (see the module docstring for its layouts).

    Returns:
      ``(splits, class_names)``: ``splits`` maps a split name to
      ``(paths, labels)`` (tuples, sorted by path within each class), and
      ``class_names`` is a tuple (empty for an unlabelled folder).

    Raises:
      ValueError: the folder does not exist or holds no image.
    """
    root = root.rstrip("/")
    if not tf.io.gfile.isdir(root):
        raise ValueError(f"image_folder root {root!r} is not a directory")
    top = _subdirectories(root)
    nested = top and all(_subdirectories(f"{root}/{name}") for name in top)
    if nested:  # root/split/class/image
        layout = {split: f"{root}/{split}" for split in top}
        class_names = tuple(sorted({c for d in layout.values() for c in _subdirectories(d)}))
    elif top:  # root/class/image
        layout, class_names = {"train": root}, tuple(top)
    else:  # root/image
        layout, class_names = {}, ()
    splits = {}
    for split, directory in layout.items():
        paths, labels = [], []
        for label, name in enumerate(class_names):
            if tf.io.gfile.isdir(f"{directory}/{name}"):
                files = _images_in(f"{directory}/{name}")
                paths += files
                labels += [label] * len(files)
        splits[split] = (tuple(paths), tuple(labels))
    if not layout:
        files = _images_in(root)
        splits["train"] = (tuple(files), (-1,) * len(files))
    empty = [split for split, (paths, _) in splits.items() if not paths]
    if empty:
        raise ValueError(
            f"image_folder {root!r} has no {'/'.join(IMAGE_EXTENSIONS)} image in split(s) {empty}"
        )
    return splits, class_names


def eval_splits(splits) -> tuple[str, str]:
    """(train, test) splits for the probes: test, else validation, else train again."""
    held_out = next((s for s in ("test", "validation", "val") if s in splits), "train")
    return ("train" if "train" in splits else held_out, held_out)


class FolderSource:
    """A split of an image folder, read file by file.

    Random access: index i is the i-th file of the split in ``scan`` order;
    images are decoded to uint8 (H, W, channels), whatever their size.
    """

    random_access = True

    def __init__(self, split: str, paths, labels, info, channels: int):
        self.name, self.split, self.info = "image_folder", split, info
        self.num_examples = len(paths)
        self.labels_np = np.asarray(labels, np.int32)
        self.image_shape = info.image_shape
        self._channels = channels
        with tf.device("/cpu:0"):
            self._paths = tf.constant(list(paths), tf.string)
            self._labels = tf.constant(list(labels), tf.int32)

    def get(self, index):
        """Returns (uint8 image (H, W, C), int32 label) of an int64 index tensor."""
        encoded = tf.io.read_file(tf.gather(self._paths, index))
        image = tf.io.decode_image(encoded, channels=self._channels, expand_animations=False)
        image.set_shape([None, None, self._channels])
        return image, tf.gather(self._labels, index)
