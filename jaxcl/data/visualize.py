"""Writes a PNG grid of training examples and their augmented views.

Usage::

    python -m jaxcl.data.visualize --dataset=fashion_mnist --preset=fashion_mnist \\
        --out=aug.png
    python -m jaxcl.data.visualize --dataset=fashion_mnist --preset=simclr_imagenet \\
        --image_size=96 --out=aug_simclr.png

Each row is one example: its unaugmented image (evaluation preprocessing at the
same size) followed by ``--num_views`` augmented views drawn exactly as
`jaxcl.data.make_train_iterator` draws them at step 0 with the same seed.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import io

import numpy as np
from etils import epath
from matplotlib.figure import Figure

from jaxcl.data import augment, datasets
from jaxcl.data._tf import tf
from jaxcl.data.spec import DataSpec


def plot_views(original, views, labels, out, title=""):
    """Draws a grid: one row per example, the original then its views.

    Args:
      original: float32 (N, H, W, C) in [0, 1].
      views: float32 (N, V, H, W, C) in [0, 1].
      labels: int (N,).
      out: output PNG path.
      title: figure title.
    """
    num_examples, num_views = views.shape[:2]
    cols = num_views + 1
    # A Figure without pyplot: no global backend is switched or window opened.
    fig = Figure(figsize=(1.3 * cols, 1.3 * num_examples))
    axes = fig.subplots(num_examples, cols, squeeze=False)
    for row in range(num_examples):
        images = [original[row], *views[row]]
        for col, image in enumerate(images):
            ax = axes[row, col]
            if image.shape[-1] == 1:
                ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(np.clip(image, 0.0, 1.0))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("original" if col == 0 else f"view {col - 1}", fontsize=8)
        axes[row, 0].set_ylabel(f"label {labels[row]}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    # Any epath filesystem (gs:// included).
    epath.Path(out).write_bytes(buffer.getvalue())


def plot_augmentation_grid(spec: DataSpec, out: str, *, num_examples=8, num_views=6) -> None:
    """The augmentation grid of a run's data: originals and the views of step 0.

    Args:
      spec: the run's data (``DataSpec.from_config(config)``).
      out: output PNG path.
      num_examples: rows of the grid.
      num_views: augmented views per row.
    """
    spec = dataclasses.replace(spec, global_batch_size=num_examples, num_views=num_views)
    # Finished on the host whatever the run's augment_on_device: the device's
    # photometric half draws from the same distributions (tests/test_device_augment.py).
    batch = next(spec.train_iterator(process_index=0, process_count=1, augment_on_device=False))
    info = spec.info
    source = datasets.get_source(
        spec.dataset, spec.train_split or info.pretrain_split, spec.data_dir, spec.dataset_options
    )
    size = batch["views"].shape[2:4]
    if source.random_access:
        originals = []
        for index in batch["index"]:
            image, _ = source.get(tf.constant(index, tf.int64))
            image = tf.image.convert_image_dtype(image, tf.float32)
            originals.append(augment.preprocess_eval(image, size, info.eval_crop_fraction))
        original = np.stack([o.numpy() for o in originals])
    else:  # Streamed sources cannot look an index up: show the first view instead.
        original = batch["views"][:, 0]
    title = f"{spec.dataset} / {spec.augmentation} / seed {spec.seed}"
    plot_views(original, batch["views"], batch["label"], out, title)


def main(argv=None):
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--preset", default="fashion_mnist")
    parser.add_argument("--split", default=None)
    parser.add_argument("--out", default="aug.png")
    parser.add_argument("--num_examples", type=int, default=8)
    parser.add_argument("--num_views", type=int, default=6)
    parser.add_argument("--image_size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument(
        "--dataset_options", default=None, help="Python dict literal, e.g. \"{'seed': 1}\""
    )
    parser.add_argument(
        "--augment_options",
        default=None,
        help="Python dict literal, e.g. \"{'crop_scale': (0.3, 1.0)}\"",
    )
    args = parser.parse_args(argv)
    spec = DataSpec(
        dataset=args.dataset,
        train_split=args.split,
        eval_train_split="train",
        eval_test_split="test",
        data_dir=args.data_dir,
        dataset_options=ast.literal_eval(args.dataset_options) if args.dataset_options else {},
        image_size=args.image_size,
        eval_image_size=args.image_size,
        augmentation=args.preset,
        augment_options=ast.literal_eval(args.augment_options) if args.augment_options else {},
        num_views=args.num_views,
        global_batch_size=args.num_examples,
        seed=args.seed,
    )
    plot_augmentation_grid(spec, args.out, num_examples=args.num_examples, num_views=args.num_views)
    print(f"wrote {args.out}: {args.num_examples} examples x {args.num_views} views")


if __name__ == "__main__":
    main()
