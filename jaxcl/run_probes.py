"""A run's probes: features of its splits on its mesh, scored with its settings.

The pieces that the end-of-run evaluation (``jaxcl.evaluation``), the kNN
monitor and the baselines (``jaxcl.baseline_probes``) share: every split is
streamed through a feature function on the run's mesh (``jaxcl.features``),
and the linear probe and kNN (``jaxcl.probes``) run on that mesh with the
run's ``config.eval`` and kNN settings.
"""

from __future__ import annotations

from jaxcl import features, probes

__all__ = ["feature_batch_size", "knn_top1", "linear_probe", "split_features"]


def feature_batch_size(trainer, wanted: int | None = None) -> int:
    """``wanted`` (default ``config.eval.feature_batch_size``) rounded up to a multiple
    of the mesh's devices, so that every batch splits evenly over them."""
    wanted = wanted if wanted is not None else trainer.config.eval.feature_batch_size
    devices = trainer.mesh.size
    return -(-wanted // devices) * devices


def split_features(
    trainer,
    variables,
    split: str,
    max_examples: int = 0,
    *,
    apply=None,
    data=None,
    description=None,
) -> features.LabelledFeatures:
    """Features of a split of the run's dataset, streamed through the mesh.

    Args:
      trainer: the run's trainer (data, mesh, encoder).
      variables: the variables of ``apply`` (``trainer.encoder_variables(state)``).
      split: the split.
      max_examples: only the first ones; 0 for all.
      apply: a ``jaxcl.features.FeatureFn`` (default: the trainer's encoder).
      data: the ``DataSpec`` to read (default: the run's; another dataset for
        transfer evaluation).
      description: progress-bar label (None: no bar).

    Returns:
      ``LabelledFeatures``, the same in every process.
    """
    data = data if data is not None else trainer.data
    batches = data.eval_iterator(split, feature_batch_size(trainer), max_examples)
    apply = apply if apply is not None else trainer.feature_fn
    return features.stream_features(
        apply, variables, batches, trainer.mesh, description=description
    )


def linear_probe(
    trainer,
    train: features.LabelledFeatures,
    test: features.LabelledFeatures,
    num_classes: int | None = None,
):
    """``config.eval``'s linear evaluation on the mesh; see ``probes.linear_evaluation``.

    ``num_classes`` defaults to the run's dataset's (transfer: the other dataset's).
    """
    config = trainer.config
    return probes.linear_evaluation(
        train.features,
        train.labels,
        test.features,
        test.labels,
        num_classes=num_classes or trainer.num_classes,
        epochs=config.eval.linear_epochs,
        batch_size=config.eval.linear_batch_size,
        learning_rate=config.eval.linear_learning_rate,
        weight_decay=config.eval.linear_weight_decay,
        seed=config.seed,
        mesh=trainer.mesh,
    )


def knn_top1(
    trainer,
    train: features.LabelledFeatures,
    test: features.LabelledFeatures,
    num_classes: int | None = None,
):
    """Weighted kNN top-1 with the run's k and temperature, on the mesh."""
    return probes.knn_accuracy(
        train.features,
        train.labels,
        test.features,
        test.labels,
        num_classes=num_classes or trainer.num_classes,
        k=trainer.config.knn_k,
        temperature=trainer.config.knn_temperature,
        mesh=trainer.mesh,
    )
