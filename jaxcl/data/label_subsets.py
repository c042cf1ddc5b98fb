"""Labelled subsets for semi-supervised evaluation: a fraction of the labels, per class.

SimCLR's second protocol (Chen et al. 2020, arXiv:2002.05709, Section 7; SimCLR
v2, arXiv:2006.10029) fine-tunes a pretrained encoder on 1% or 10% of
ImageNet's labels. The subsets here are:

- **class-balanced and deterministic**: each class keeps the same fraction
  (or count) of its examples, chosen by a permutation seeded by (seed, class)
  alone, so every process, device count and machine picks the same examples,
  and a larger fraction of the same seed contains a smaller one (the first
  examples of each class's order);
- or **read from a file** that lists the file names of the subset, one per
  line, as google-research/simclr's ``imagenet_subsets/1percent.txt`` and
  ``10percent.txt`` do, matched against the split's file names.
"""

from __future__ import annotations

import numpy as np
from etils import epath

__all__ = ["class_balanced_subset", "subset_from_file"]


def class_balanced_subset(labels, *, fraction=None, per_class=None, seed=0) -> np.ndarray:
    """The indices of a class-balanced subset of a labelled split, sorted.

    Args:
      labels: int (N,) class labels of the split, in its stored order (negative
        labels, i.e. unlabelled examples, are never chosen).
      fraction: keep ``round(fraction * n_c)`` examples of each class c of n_c
        (at least one), e.g. 0.01 for SimCLR's 1% protocol.
      per_class: or keep exactly this many examples of every class.
      seed: the subset's seed; the same seed gives the same subset everywhere.

    Returns:
      int64 (M,) indices into ``labels``, in increasing order.

    Raises:
      ValueError: unless exactly one of ``fraction`` in (0, 1] and ``per_class``
        >= 1 is given, or when a class has fewer than ``per_class`` examples.

    Example:
      >>> labels = np.repeat(np.arange(10), 6000)
      >>> len(class_balanced_subset(labels, fraction=0.01))
      600
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}; "
            "pass the split's class labels."
        )
    if (fraction is None) == (per_class is None):
        raise ValueError(
            f"give one of fraction and per_class, got fraction={fraction!r}, "
            f"per_class={per_class!r}; e.g. fraction=0.01 for 1% of the labels."
        )
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction!r} is not in (0, 1]; use e.g. 0.01 or 0.1.")
    if per_class is not None and int(per_class) < 1:
        raise ValueError(f"per_class={per_class!r} is below 1; use a count of at least 1.")
    chosen = []
    for label in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == label)
        if per_class is not None:
            count = int(per_class)
            if count > len(members):
                raise ValueError(
                    f"class {label} has {len(members)} examples, fewer than per_class="
                    f"{count}; use per_class <= {len(members)} or a fraction."
                )
        else:
            count = max(1, round(fraction * len(members)))
        # A permutation of the class's members seeded by (seed, class) only: a
        # class's choice does not depend on the other classes or on the machine.
        order = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, int(label)])))
        chosen.append(members[order.permutation(len(members))[:count]])
    if not chosen:
        raise ValueError(
            "labels holds no labelled example (all are negative); pass a labelled split."
        )
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def subset_from_file(path, file_names) -> np.ndarray:
    """The indices of the examples whose file names a subset file lists, sorted.

    Args:
      path: a text file with one file name per line (blank lines ignored), such
        as google-research/simclr's ``imagenet_subsets/1percent.txt``
        (``n01440764_10026.JPEG``); any etils.epath path (gs:// included).
      file_names: (N,) the split's file names in stored order (TFDS's
        ``file_name`` feature); only the last path component is compared.

    Returns:
      int64 (M,) indices into ``file_names``, in increasing order.

    Raises:
      ValueError: when a listed name is not in the split (the message gives how
        many and the first few), or the file lists nothing.
    """
    wanted = [line.strip() for line in epath.Path(path).read_text().splitlines() if line.strip()]
    if not wanted:
        raise ValueError(f"{path} lists no file name; pass a subset file, one name per line.")
    names = [str(name.decode() if isinstance(name, bytes) else name) for name in file_names]
    position = {name.rsplit("/", 1)[-1]: index for index, name in enumerate(names)}
    missing = [name for name in wanted if name not in position]
    if missing:
        raise ValueError(
            f"{len(missing)} of the {len(wanted)} names in {path} are not in the split "
            f"(first: {', '.join(missing[:3])}); use the subset file of this split."
        )
    return np.sort(np.array([position[name] for name in wanted], np.int64))
