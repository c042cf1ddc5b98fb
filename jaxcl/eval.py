"""Offline evaluation of a trained run: ``python -m jaxcl.eval --workdir=DIR``.

Restores the newest checkpoint of ``DIR``, extracts frozen encoder features of
the evaluation splits, and writes ``DIR/results.json`` with the linear
evaluation top-1 (``linear_top1``), the weighted-kNN top-1 (``knn_top1``) and
the alignment and uniformity of the test features (Wang & Isola 2020).
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging

__all__ = ["eval_arrays", "evaluate_state", "evaluate_workdir"]


def eval_arrays(config, split, max_examples):
    """Un-augmented images and labels of ``split`` (at most ``max_examples``; 0 = all)."""
    from jaxcl import data

    return data.make_eval_arrays(
        config.dataset,
        split=split,
        image_size=config.image_size,
        data_dir=config.data_dir or None,
        dataset_options=dict(config.dataset_options) if config.dataset_options else None,
        max_examples=max_examples or None,
    )


def _augmented_test_pairs(config, images_needed):
    """Two augmented views of test images, for the alignment metric."""
    from jaxcl import data

    iterator = data.make_train_iterator(
        config.dataset,
        split=config.eval_test_split,
        preset=config.augmentation,
        global_batch_size=min(images_needed, 1000),
        image_size=config.image_size,
        num_views=2,
        seed=config.seed + 1,
        process_index=0,
        process_count=1,
        data_dir=config.data_dir or None,
        dataset_options=dict(config.dataset_options) if config.dataset_options else None,
        augment_options=dict(config.augment_options) if config.augment_options else None,
    )
    return next(iterator)["views"]


def evaluate_state(trainer, state, workdir: str | None = None) -> dict:
    """Linear evaluation, kNN and alignment/uniformity of a train state's encoder.

    Args:
      trainer: the ``jaxcl.train.Trainer`` of the run.
      state: its train state.
      workdir: where to write ``results.json`` (on process 0), or None.

    Returns:
      A dict with ``linear_top1``, ``linear_train_top1``, ``knn_top1``,
      ``alignment``, ``uniformity``, example counts and the evaluation time.
    """
    import jax

    from jaxcl import evaluate

    config = trainer.config
    started = time.perf_counter()
    encode = trainer.encoder_fn(state)
    batch = config.eval.feature_batch_size
    train_images, train_labels = eval_arrays(
        config, config.eval_train_split, config.eval.max_train_examples
    )
    test_images, test_labels = eval_arrays(
        config, config.eval_test_split, config.eval.max_test_examples
    )
    train_features = evaluate.extract_features(encode, train_images, batch_size=batch)
    test_features = evaluate.extract_features(encode, test_images, batch_size=batch)
    results = evaluate.linear_evaluation(
        train_features,
        train_labels,
        test_features,
        test_labels,
        num_classes=trainer.num_classes,
        epochs=config.eval.linear_epochs,
        batch_size=config.eval.linear_batch_size,
        learning_rate=config.eval.linear_learning_rate,
        weight_decay=config.eval.linear_weight_decay,
        seed=config.seed,
    )
    results["knn_top1"] = evaluate.knn_accuracy(
        train_features,
        train_labels,
        test_features,
        test_labels,
        num_classes=trainer.num_classes,
        k=config.knn_k,
        temperature=config.knn_temperature,
    )
    views = _augmented_test_pairs(config, len(test_images))
    results.update(
        evaluate.alignment_uniformity(
            evaluate.extract_features(encode, views[:, 0], batch_size=batch),
            evaluate.extract_features(encode, views[:, 1], batch_size=batch),
        )
    )
    if config.eval.baselines:
        from jaxcl import baselines

        results["baseline_raw_pixels_top1"] = baselines.raw_pixels_linear_top1(
            config, trainer.num_classes
        )
        results["baseline_random_encoder_top1"] = baselines.random_encoder_linear_top1(trainer)
    if workdir is not None and jax.process_index() == 0:
        _write_plots(config, workdir, test_features, test_labels, results)
    results.update(
        step=int(state["step"]),
        train_examples=len(train_images),
        test_examples=len(test_images),
        eval_seconds=time.perf_counter() - started,
    )
    if workdir is not None and jax.process_index() == 0:
        path = os.path.join(workdir, "results.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2, sort_keys=True)
    return results


def _write_plots(config, workdir, test_features, test_labels, results):
    from jaxcl import plots
    from jaxcl.metrics import read_metrics

    directory = plots.plots_directory(workdir)
    name = f"{config.method} / {config.model} / {config.dataset}"
    records = read_metrics(workdir)
    if records:
        plots.plot_training_curves(records, f"{directory}/training_curves.png", title=name)
    plots.plot_embedding(
        test_features,
        test_labels,
        f"{directory}/embedding_pca.png",
        class_names=_class_names(config),
        title=f"{name}: test features, linear top-1 {100 * results['linear_top1']:.2f}%",
    )
    plots.plot_augmentations(config, f"{directory}/augmentations.png")


def _class_names(config):
    if config.dataset != "fashion_mnist":
        return None
    from jaxcl.data.fashion_mnist_debian import CLASS_NAMES

    return list(CLASS_NAMES)


def evaluate_workdir(workdir: str) -> dict:
    """Restores the newest checkpoint of a run and evaluates it (see ``evaluate_state``)."""
    from jaxcl.checkpoint import Checkpointer
    from jaxcl.train import Trainer, load_config

    config = load_config(workdir)
    trainer = Trainer(config)
    checkpointer = Checkpointer(workdir)
    _, state = checkpointer.restore(trainer.abstract_state())
    checkpointer.close()
    if state is None:
        raise FileNotFoundError(
            f"no checkpoint in {checkpointer.directory}; train first with "
            f"python -m jaxcl.main --workdir={workdir}"
        )
    return evaluate_state(trainer, state, workdir)


def _main(argv):
    del argv
    results = evaluate_workdir(flags.FLAGS.workdir)
    logging.info("results: %s", results)
    print(json.dumps(results, indent=2, sort_keys=True))


def run():
    """Console-script entry point ``jaxcl-eval``."""
    # Flags are defined here, not at import, so that importing this module
    # (the training loop does) never clashes with jaxcl.main's flags.
    flags.DEFINE_string("workdir", None, "Directory of a jaxcl training run.")
    flags.mark_flag_as_required("workdir")
    app.run(_main)


if __name__ == "__main__":
    run()
