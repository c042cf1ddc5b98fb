"""PNG figures of a run: training curves, an embedding of test features, augmentations.

Written by the training run into ``workdir/plots/`` (process 0 only) so that a
person can look at what was learnt without reading numbers.
"""

from __future__ import annotations

import io

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

from jaxcl import data, workdir_io
from jaxcl.metric_writer import read_metrics

__all__ = [
    "plot_augmentations",
    "plot_embedding",
    "plot_training_curves",
    "plots_directory",
    "write_run_plots",
]

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
      records: the records of ``jaxcl.metric_writer.read_metrics``.
      out: PNG path.
      title: figure title.
    """
    # Figures without pyplot: no global backend is switched, nothing is left open.
    fig = Figure(figsize=(12, 6.5))
    axes = fig.subplots(2, 3)
    steps = [r["step"] for r in records]
    for ax, (key, label) in zip(axes.flat, _CURVES, strict=True):
        values = [float(r[key]) if key in r else np.nan for r in records]
        ax.plot(steps, values, lw=1.5)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, out, dpi=90)


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
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    cmap = mpl.colormaps["tab10"]
    for label in np.unique(labels):
        mask = labels == label
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        ax.scatter(*projected[mask].T, s=4, alpha=0.6, color=cmap(int(label) % 10), label=name)
    ax.set_xlabel(f"PC 1 ({100 * explained[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * explained[1]:.1f}% of variance)")
    ax.legend(markerscale=4, fontsize=8, loc="best")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, out, dpi=90)


def plot_augmentations(spec: data.DataSpec, out: str, *, num_examples: int = 8) -> None:
    """The augmentation grid of a run: originals and the views training sees at step 0.

    Args:
      spec: the run's data (``jaxcl.data.DataSpec.from_config(config)``).
      out: PNG path.
      num_examples: rows of the grid.
    """
    data.plot_augmentation_grid(
        spec, out, num_examples=num_examples, num_views=max(spec.num_views, 4)
    )


def save_png(fig: Figure, out, *, dpi: int) -> None:
    """Writes ``fig`` as a PNG to ``out``, a local or ``gs://`` path, atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    workdir_io.write_bytes(workdir_io.resolve(out), buffer.getvalue())


def plots_directory(workdir: str):
    """``workdir/plots`` (an ``epath.Path``), created if needed."""
    path = workdir_io.resolve(workdir) / "plots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_run_plots(config, spec: data.DataSpec, workdir: str, results) -> None:
    """Writes a run's three PNGs into ``workdir/plots``.

    Training curves (from ``metrics.jsonl``), the PCA of the test features and
    the augmentation grid.

    Args:
      config: the run's config (for the titles).
      spec: the run's data.
      workdir: the run directory.
      results: a ``jaxcl.evaluation.EvalResult`` (test features, ``linear_top1``).
    """
    directory = plots_directory(workdir)
    name = f"{config.method} / {config.model} / {config.dataset}"
    records = read_metrics(workdir)
    if records:
        plot_training_curves(records, directory / "training_curves.png", title=name)
    class_names = (
        list(data.FASHION_MNIST_CLASS_NAMES) if config.dataset == "fashion_mnist" else None
    )
    plot_embedding(
        results.test_features,
        results.test_labels,
        directory / "embedding_pca.png",
        class_names=class_names,
        title=f"{name}: test features, linear top-1 {100 * results['linear_top1']:.2f}%",
    )
    plot_augmentations(spec, directory / "augmentations.png")
