"""The evaluation protocol of a trained encoder, and the kNN monitor of training.

``evaluate_state`` extracts frozen encoder features of the evaluation splits
(``config.eval_train_split`` / ``config.eval_test_split``) and scores them with
the linear probe, weighted kNN and Wang & Isola's alignment and uniformity
(``jaxcl.probes``), plus the two baselines when ``config.eval.baselines``. It
writes nothing: ``jaxcl.run`` turns its result into ``results.json`` and plots.
"""

from __future__ import annotations

import math
import time

import numpy as np

from jaxcl import baseline_probes, features, probes
from jaxcl.augmented_probe import augmented_linear_evaluation
from jaxcl.run_probes import knn_top1, linear_probe, split_features

__all__ = ["EvalResult", "KnnMonitor", "evaluate_state"]


class EvalResult(dict):
    """The metrics of ``evaluate_state`` (a dict), with the test features for plots.

    Attributes:
      test_features: (N, d) float32 encoder features of the test split.
      test_labels: (N,) their labels.
    """

    test_features: np.ndarray
    test_labels: np.ndarray


def _alignment_uniformity(trainer, variables, num_images) -> dict[str, float]:
    """Alignment and uniformity of two augmented views of up to 1000 test images.

    As many images as split evenly over the devices (one batch of the training
    pipeline on the test split); NaN when the test split has fewer images than
    there are devices.
    """
    devices = trainer.mesh.size
    batch = min(num_images, 1000) // devices * devices
    if batch == 0:
        return {"alignment": math.nan, "uniformity": math.nan}
    views = next(
        trainer.data.train_iterator(
            split=trainer.data.eval_test_split,
            global_batch_size=batch,
            num_views=2,
            seed=trainer.config.seed + 1,
            # Finished views here: the two implementations draw from one distribution.
            augment_on_device=False,
        )
    )
    mask = np.ones(len(views["label"]), bool)
    view_features = [
        features.stream_features(
            trainer.feature_fn,
            variables,
            [{"image": views["views"][:, view], "label": views["label"], "mask": mask}],
            trainer.mesh,
        ).features
        for view in (0, 1)
    ]
    return probes.alignment_uniformity(*view_features)


def evaluate_state(trainer, state, *, workdir: str | None = None) -> EvalResult:
    """Linear evaluation, kNN and alignment/uniformity of a train state's encoder.

    Features of the evaluation splits are streamed through the encoder on the
    mesh (``jaxcl.features``); no split's images are ever held in memory, so
    the same code runs on Fashion-MNIST and on ImageNet.

    The linear evaluation follows ``config.eval.linear_protocol``: 'features'
    (a probe on cached features of un-augmented images, ``jaxcl.probes``) or
    'augmented' (SimCLR's and MoCo's protocol: a head trained over the frozen
    encoder on cropped and flipped images, ``jaxcl.augmented_probe``).

    Args:
      trainer: the ``jaxcl.train.Trainer`` of the run.
      state: its train state.
      workdir: the run's directory, where the augmented protocol checkpoints
        its head (None: it keeps no checkpoint).

    Returns:
      An ``EvalResult`` with ``linear_top1``, ``linear_train_top1``,
      ``knn_top1``, ``alignment``, ``uniformity``, the baselines when
      configured, example counts, the step and the evaluation time.
    """
    config, spec = trainer.config, trainer.data
    started = time.perf_counter()
    variables = trainer.encoder_variables(state)
    train = split_features(
        trainer, variables, spec.eval_train_split, config.eval.max_train_examples,
        description=f"features of {spec.eval_train_split}",
    )  # fmt: skip
    test = split_features(
        trainer, variables, spec.eval_test_split, config.eval.max_test_examples,
        description=f"features of {spec.eval_test_split}",
    )  # fmt: skip
    if config.eval.linear_protocol == "augmented":
        results = EvalResult(
            augmented_linear_evaluation(
                trainer,
                variables,
                workdir=workdir,
                encoder_step=int(state["step"]),
                train=train,
                test=test,
            )
        )
    else:
        results = EvalResult(linear_probe(trainer, train, test))
    results["linear_protocol"] = config.eval.linear_protocol
    results["knn_top1"] = knn_top1(trainer, train, test)
    results.update(_alignment_uniformity(trainer, variables, len(test.labels)))
    if config.eval.baselines:
        results.update(baseline_probes.baselines(trainer))
    results.update(
        step=int(state["step"]),
        train_examples=len(train.labels),
        test_examples=len(test.labels),
        eval_seconds=time.perf_counter() - started,
    )
    results.test_features, results.test_labels = test.features, test.labels
    return results


class KnnMonitor:
    """Weighted kNN accuracy on a fixed subset, every ``config.knn_every_steps``.

    A ``jaxcl.train.train`` ``on_log`` hook: it returns ``{'knn_top1': ...}`` at
    the log steps that are multiples of ``knn_every_steps`` and at the last step.
    The subsets (the first ``knn_train_examples`` of the evaluation train split,
    a fifth as many, at least 1000, of its test split) are streamed through the
    encoder each time, like the end-of-run evaluation.

    Args:
      trainer: the run's trainer.
    """

    def __init__(self, trainer):
        config = trainer.config
        self.trainer = trainer
        self.every = config.knn_every_steps
        self.train_examples = config.knn_train_examples
        self.test_examples = max(1000, config.knn_train_examples // 5)

    def __call__(self, step: int, state, is_last: bool) -> dict[str, float]:
        if step % self.every and not is_last:
            return {}
        trainer, spec = self.trainer, self.trainer.data
        variables = trainer.encoder_variables(state)
        train = split_features(trainer, variables, spec.eval_train_split, self.train_examples)
        test = split_features(trainer, variables, spec.eval_test_split, self.test_examples)
        return {"knn_top1": knn_top1(trainer, train, test)}
