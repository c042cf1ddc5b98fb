"""Input-pipeline throughput: images per second per CPU core, median of timed runs.

Usage::

    python bench/input_pipeline.py                 # both benchmarks
    python bench/input_pipeline.py --runs=5 --only=fashion_mnist

Benchmarks (each example yields two augmented views; "images" counts examples):

- ``simclr_imagenet_224``: `simclr_imagenet` preset at 224x224 on ``synthetic``
  256x256x3 source images (no disk, so this measures augmentation plus the
  generation of the source image, which is measured on its own as
  ``synthetic_source_256``: the unaugmented eval iterator at 256 px).
- ``geometric_224``: the host's share with ``augment_on_device``: the same
  preset's random resized crop, resize and flip, uint8 out, against
  ``pil_geometric_224``, PIL's RandomResizedCrop and flip alone.
- ``fashion_mnist``: the `fashion_mnist` preset at 28x28 on Fashion-MNIST
  (prepared from the Debian files into --data_dir on first use).
- ``pil_simclr_imagenet_224``: the reference, ``bench/pil_reference.py``: the same
  two-view augmentation with PIL, as torchvision does it, in this one Python
  process (one core, like a DataLoader worker), on 64 source images made by the
  synthetic data set once up front. Timed right before ``simclr_imagenet_224``
  (not interleaved: tf.data would fill its buffers while paused); the last
  line is the ratio of their per-core medians.
- ``given_*``: jaxcl's augmentation mapped exactly as ``make_train_iterator``
  maps it, on the reference's 64 sources read from memory: the augmentation
  alone, against the reference on equal terms (the synthetic data set spends
  most of ``geometric_224``'s time drawing its source images).

Per core = images/s divided by the CPU cores this process may use
(``os.sched_getaffinity``); tf.data uses all of them. On a shared machine the
numbers move with the neighbours' load: compare ratios measured in one run.
"""

import argparse
import os
import statistics
import time

SYNTHETIC_256 = {"image_shape": (256, 256, 3), "num_classes": 1000, "num_examples": 100_000}


def _time_round(iterator, batch_size, batches):
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def _time_iterators(contestants, batches, runs, warmup):
    """Images/s of each ``name: (batch_size, make_iterator)``, one contestant at a time.

    Not interleaved: tf.data keeps preparing batches in background threads, so a
    pipeline paused while another contestant runs would be read from a full buffer.
    Each iterator is made when its turn comes and drained continuously.
    """
    rates = {}
    for name, (batch_size, make) in contestants.items():
        iterator = make()
        for _ in range(warmup):
            next(iterator)
        rates[name] = [_time_round(iterator, batch_size, batches[name]) for _ in range(runs)]
        del iterator
    return rates


def _sources():
    """64 synthetic 256x256 uint8 source images, made once up front."""
    from jaxcl.data import pipeline

    sources = next(
        pipeline.make_eval_iterator(
            "synthetic", split="train", global_batch_size=64, image_size=256,
            process_index=0, process_count=1, dataset_options=SYNTHETIC_256,
        )
    )["image"]  # fmt: skip
    return (sources * 255).round().astype("uint8")


def _pil_iterator(batch_size, geometric_only=False):
    """The PIL reference on the 64 `_sources`."""
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from pil_reference import two_view_batches

    return two_view_batches(_sources(), batch_size, size=224, geometric_only=geometric_only)


def _given_sources_iterator(batch_size, geometric_only=False):
    """jaxcl's per-example augmentation, as make_train_iterator maps it, on the 64 `_sources`.

    The same tf.data map (parallel, deterministic, batched, prefetched) over
    `jaxcl.data.augment.augment_views` (or `geometric_views`), reading the
    sources from memory as the PIL reference does, so that only the
    augmentation is compared.
    """
    from jaxcl.data import augment, pipeline
    from jaxcl.data._tf import tf

    images = tf.constant(_sources())
    views = pipeline.view_configs("simclr_imagenet", 2)

    def make(index):
        image = tf.gather(images, index % 64)
        if geometric_only:
            return augment.geometric_views(image, views, 0, index, 0, (224, 224))[0]
        image = tf.image.convert_image_dtype(image, tf.float32)
        return augment.augment_views(image, views, 0, index, 0, (224, 224))

    dataset = tf.data.Dataset.range(2**62).map(
        make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def main(argv=None):
    """Runs the benchmarks and prints one line per benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batches", type=int, default=4, help="batches per timed run")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument(
        "--only",
        choices=["simclr_imagenet_224", "geometric_224", "fashion_mnist", "synthetic_source_256"],
        help="one group (simclr_imagenet_224 and geometric_224 include their PIL references)",
    )
    args = parser.parse_args(argv)

    from jaxcl.data import pipeline

    cores = len(os.sched_getaffinity(0))
    synthetic = SYNTHETIC_256
    benchmarks = {
        "simclr_imagenet_224": (
            64,
            lambda: pipeline.make_train_iterator(
                "synthetic", preset="simclr_imagenet", global_batch_size=64, image_size=224,
                process_index=0, process_count=1, dataset_options=synthetic,
            ),
        ),
        "geometric_224": (
            64,
            lambda: pipeline.make_train_iterator(
                "synthetic", preset="simclr_imagenet", global_batch_size=64, image_size=224,
                process_index=0, process_count=1, dataset_options=synthetic,
                augment_on_device=True,
            ),
        ),
        "synthetic_source_256": (
            64,
            lambda: pipeline.make_eval_iterator(
                "synthetic", split="train", global_batch_size=64, image_size=256,
                process_index=0, process_count=1, dataset_options=synthetic,
            ),
        ),
        "fashion_mnist": (
            512,
            lambda: pipeline.make_train_iterator(
                "fashion_mnist", preset="fashion_mnist", global_batch_size=512,
                process_index=0, process_count=1, data_dir=args.data_dir,
            ),
        ),
    }  # fmt: skip
    groups = {
        "simclr_imagenet_224": [
            "pil_simclr_imagenet_224",
            "simclr_imagenet_224",
            "given_simclr_imagenet_224",
        ],
        "geometric_224": ["pil_geometric_224", "geometric_224", "given_geometric_224"],
        "synthetic_source_256": ["synthetic_source_256"],
        "fashion_mnist": ["fashion_mnist"],
    }
    benchmarks["given_simclr_imagenet_224"] = (64, lambda: _given_sources_iterator(64))
    benchmarks["given_geometric_224"] = (64, lambda: _given_sources_iterator(64, True))
    benchmarks["pil_simclr_imagenet_224"] = (64, lambda: _pil_iterator(64))
    benchmarks["pil_geometric_224"] = (64, lambda: _pil_iterator(64, geometric_only=True))
    # The references run in this process only: one core.
    cores_used = {name: cores for name in benchmarks} | {
        "pil_simclr_imagenet_224": 1,
        "pil_geometric_224": 1,
    }
    print(f"cores available: {cores}; median of {args.runs} runs of {args.batches} batches")
    per_core = {}
    for group, names in groups.items():
        if args.only and group != args.only:
            continue
        batches = {n: args.batches * (8 if n == "fashion_mnist" else 1) for n in names}
        rates = _time_iterators({n: benchmarks[n] for n in names}, batches, args.runs, warmup=2)
        for name in names:
            median = statistics.median(rates[name])
            per_core[name] = median / cores_used[name]
            runs = ", ".join(f"{rate:.0f}" for rate in rates[name])
            print(
                f"{name:24s} {median:9.1f} images/s  {per_core[name]:9.1f} images/s/core "
                f"on {cores_used[name]} core(s)  (runs: {runs})"
            )
    results = {
        "simclr_imagenet 2 views 224px (tf.data mode, the whole chain)": "simclr_imagenet_224",
        "geometric 2 views 224px (augment_on_device: crop, resize, flip, uint8)": "geometric_224",
    }
    for title, name in results.items():
        if f"pil_{name}" in per_core:
            pil = per_core[f"pil_{name}"]
            print(
                f"RESULT {title}: jaxcl {per_core[name]:.1f} images/s/core (ratio "
                f"{per_core[name] / pil:.2f}x), on given sources {per_core[f'given_{name}']:.1f} "
                f"(ratio {per_core[f'given_{name}'] / pil:.2f}x), PIL reference {pil:.1f}"
            )


if __name__ == "__main__":
    main()
