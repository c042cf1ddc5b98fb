"""The evaluation protocol of a trained encoder, and the kNN monitor of training.

``evaluate_state`` extracts frozen encoder features of the evaluation splits
(``config.eval_train_split`` / ``config.eval_test_split``) and scores them with
the linear probe, weighted kNN and Wang & Isola's alignment and uniformity
(``jaxcl.probes``), plus the two baselines when ``config.eval.baselines``. It
writes nothing: ``jaxcl.run`` turns its result into ``results.json`` and plots.
"""

from __future__ import annotations

import time

import numpy as np

from jaxcl import baseline_probes, probes

__all__ = ["EvalResult", "KnnMonitor", "evaluate_state"]


class EvalResult(dict):
    """The metrics of ``evaluate_state`` (a dict), with the test features for plots.

    Attributes:
      test_features: (N, d) float32 encoder features of the test split.
      test_labels: (N,) their labels.
    """

    test_features: np.ndarray
    test_labels: np.ndarray


def _augmented_test_pairs(trainer, images_needed):
    """Two augmented views of test images, for the alignment metric."""
    iterator = trainer.data.train_iterator(
        split=trainer.data.eval_test_split,
        global_batch_size=min(images_needed, 1000),
        num_views=2,
        seed=trainer.config.seed + 1,
        process_index=0,
        process_count=1,
    )
    return next(iterator)["views"]


def evaluate_state(trainer, state) -> EvalResult:
    """Linear evaluation, kNN and alignment/uniformity of a train state's encoder.

    Args:
      trainer: the ``jaxcl.train.Trainer`` of the run.
      state: its train state.

    Returns:
      An ``EvalResult`` with ``linear_top1``, ``linear_train_top1``,
      ``knn_top1``, ``alignment``, ``uniformity``, the baselines when
      configured, example counts, the step and the evaluation time.
    """
    config, spec = trainer.config, trainer.data
    started = time.perf_counter()
    encode = trainer.encoder_fn(state)
    batch = config.eval.feature_batch_size
    train = spec.eval_arrays(spec.eval_train_split, config.eval.max_train_examples)
    test = spec.eval_arrays(spec.eval_test_split, config.eval.max_test_examples)
    (train_images, train_labels), (test_images, test_labels) = train, test
    train_features = probes.extract_features(encode, train_images, batch_size=batch)
    test_features = probes.extract_features(encode, test_images, batch_size=batch)
    results = EvalResult(
        probes.linear_evaluation(
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
    )
    results["knn_top1"] = probes.knn_accuracy(
        train_features,
        train_labels,
        test_features,
        test_labels,
        num_classes=trainer.num_classes,
        k=config.knn_k,
        temperature=config.knn_temperature,
    )
    views = _augmented_test_pairs(trainer, len(test_images))
    results.update(
        probes.alignment_uniformity(
            probes.extract_features(encode, views[:, 0], batch_size=batch),
            probes.extract_features(encode, views[:, 1], batch_size=batch),
        )
    )
    if config.eval.baselines:
        results["baseline_raw_pixels_top1"] = baseline_probes.raw_pixels_linear_top1(
            config, trainer.num_classes, train, test
        )
        results["baseline_random_encoder_top1"] = baseline_probes.random_encoder_linear_top1(
            trainer, train, test
        )
    results.update(
        step=int(state["step"]),
        train_examples=len(train_images),
        test_examples=len(test_images),
        eval_seconds=time.perf_counter() - started,
    )
    results.test_features, results.test_labels = test_features, test_labels
    return results


class KnnMonitor:
    """Weighted kNN accuracy on a fixed subset, every ``config.knn_every_steps``.

    A ``jaxcl.train.train`` ``on_log`` hook: it returns ``{'knn_top1': ...}`` at
    the log steps that are multiples of ``knn_every_steps`` and at the last step.

    Args:
      trainer: the run's trainer.
    """

    def __init__(self, trainer):
        config, spec = trainer.config, trainer.data
        self.trainer = trainer
        self.every = config.knn_every_steps
        self.train_images, self.train_labels = spec.eval_arrays(
            spec.eval_train_split, config.knn_train_examples
        )
        self.test_images, self.test_labels = spec.eval_arrays(
            spec.eval_test_split, max(1000, config.knn_train_examples // 5)
        )

    def __call__(self, step: int, state, is_last: bool) -> dict[str, float]:
        if step % self.every and not is_last:
            return {}
        config = self.trainer.config
        encode = self.trainer.encoder_fn(state)
        batch = config.eval.feature_batch_size
        train = probes.extract_features(encode, self.train_images, batch_size=batch)
        test = probes.extract_features(encode, self.test_images, batch_size=batch)
        top1 = probes.knn_accuracy(
            train,
            self.train_labels,
            test,
            self.test_labels,
            num_classes=self.trainer.num_classes,
            k=config.knn_k,
            temperature=config.knn_temperature,
        )
        return {"knn_top1": top1}
