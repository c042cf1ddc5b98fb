"""PNG figures of a run: training curves, an embedding of test features, augmentations.

Written by the training run into ``workdir/plots/`` (process 0 only) so that a
person can look at what was learnt without reading numbers.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_augmentations", "plot_embedding", "plot_training_curves"]

_CURVES = (
    ("loss", "contrastive loss"),
    ("probe_top1", "online linear probe top-1"),
    ("alignment", "alignment (lower is better)"),
    ("uniformity", "uniformity (lower is better)"),
    ("learning_rate", "learning rate"),
    ("images_per_sec", "images / s"),
)


def plot_training_curves(records: list[dict], out: str, title: str = "") -> None:
    """Plots the logged metrics of ``metrics.jsonl`` against the step.

    Args:
      records: the records of ``jaxcl.metrics.read_metrics``.
      out: PNG path.
      title: figure title.
    """
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    steps = [r["step"] for r in records]
    for ax, (key, label) in zip(axes.flat, _CURVES, strict=True):
        values = [float(r[key]) if key in r else np.nan for r in records]
        ax.plot(steps, values, lw=1.5)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def plot_embedding(
    features: np.ndarray,
    labels: np.ndarray,
    out: str,
    *,
    class_names: list[str] | None = None,
    title: str = "",
    max_points: int = 5000,
) -> None:
    """Scatter of the first two principal components of features, coloured by class.

    Args:
      features: (N, d) features.
      labels: (N,) class labels.
      out: PNG path.
      class_names: optional legend names, indexed by label.
      title: figure title.
      max_points: points drawn (the first ones).
    """
    features = np.asarray(features[:max_points], np.float64)
    labels = np.asarray(labels[:max_points])
    centred = features - features.mean(axis=0)
    _, singular_values, components = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ components[:2].T
    explained = singular_values[:2] ** 2 / np.sum(singular_values**2)
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("tab10")
    for label in np.unique(labels):
        mask = labels == label
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        ax.scatter(*projected[mask].T, s=4, alpha=0.6, color=cmap(int(label) % 10), label=name)
    ax.set_xlabel(f"PC 1 ({100 * explained[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * explained[1]:.1f}% of variance)")
    ax.legend(markerscale=4, fontsize=8, loc="best")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def plot_augmentations(config, out: str, *, num_examples: int = 8) -> None:
    """The augmentation grid of a config: originals and the views training sees at step 0.

    Args:
      config: a training config (dataset, augmentation, image size, seed).
      out: PNG path.
      num_examples: rows of the grid.
    """
    from jaxcl.data import visualize

    arguments = [
        f"--dataset={config.dataset}",
        f"--preset={config.augmentation}",
        f"--out={out}",
        f"--num_examples={num_examples}",
        f"--num_views={max(config.num_views, 4)}",
        f"--image_size={config.image_size}",
        f"--seed={config.seed}",
    ]
    if config.train_split:
        arguments.append(f"--split={config.train_split}")
    if config.data_dir:
        arguments.append(f"--data_dir={config.data_dir}")
    if config.dataset_options:
        arguments.append(f"--dataset_options={config.dataset_options.to_dict()!r}")
    if config.augment_options:
        arguments.append(f"--augment_options={config.augment_options.to_dict()!r}")
    visualize.main(arguments)


def plots_directory(workdir: str) -> str:
    """``workdir/plots``, created if needed."""
    path = os.path.join(workdir, "plots")
    os.makedirs(path, exist_ok=True)
    return path
