"""Input-pipeline throughput: images per second per CPU core, median of timed runs.

Usage::

    python bench/input_pipeline.py                 # both benchmarks
    python bench/input_pipeline.py --runs=5 --only=fashion_mnist

Benchmarks (each example yields two augmented views; "images" counts examples):

- ``simclr_imagenet_224``: `simclr_imagenet` preset at 224x224 on ``synthetic``
  256x256x3 source images (no disk, so this measures augmentation plus the
  generation of the source image, which is measured on its own as
  ``synthetic_source_256``: the unaugmented eval iterator at 256 px).
- ``fashion_mnist``: the `fashion_mnist` preset at 28x28 on Fashion-MNIST
  (prepared from the Debian files into --data_dir on first use).

Per core = images/s divided by the CPU cores this process may use
(``os.sched_getaffinity``); tf.data uses all of them. On a shared machine the
numbers move with the neighbours' load: compare ratios measured in one run.
"""

import argparse
import os
import statistics
import time


def _time_iterator(make_iterator, batch_size, batches, runs, warmup):
    iterator = make_iterator()
    for _ in range(warmup):
        next(iterator)
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        rates.append(batches * batch_size / (time.perf_counter() - start))
    return rates


def main(argv=None):
    """Runs the benchmarks and prints one line per benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batches", type=int, default=4, help="batches per timed run")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument(
        "--only", choices=["simclr_imagenet_224", "fashion_mnist", "synthetic_source_256"]
    )
    args = parser.parse_args(argv)

    from jaxcl.data import pipeline

    cores = len(os.sched_getaffinity(0))
    synthetic = {"image_shape": (256, 256, 3), "num_classes": 1000, "num_examples": 100_000}
    benchmarks = {
        "simclr_imagenet_224": (
            64,
            lambda: pipeline.make_train_iterator(
                "synthetic", preset="simclr_imagenet", global_batch_size=64, image_size=224,
                process_index=0, process_count=1, dataset_options=synthetic,
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
    print(f"cores available: {cores}; median of {args.runs} runs of {args.batches} batches")
    for name, (batch_size, make_iterator) in benchmarks.items():
        if args.only and name != args.only:
            continue
        batches = args.batches * (8 if name == "fashion_mnist" else 1)
        rates = _time_iterator(make_iterator, batch_size, batches, args.runs, warmup=2)
        median = statistics.median(rates)
        print(
            f"{name:22s} {median:9.1f} images/s  {median / cores:9.1f} images/s/core  "
            f"(runs: {', '.join(f'{r:.0f}' for r in rates)})"
        )


if __name__ == "__main__":
    main()
