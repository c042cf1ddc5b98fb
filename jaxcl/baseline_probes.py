"""The two reference points every linear-evaluation number is read against.

* logistic regression on raw pixels: what a linear classifier gets without any
  representation learning (Fashion-MNIST: about 84%);
* the same encoder at random initialisation with the same linear evaluation:
  what the architecture alone gives, before any training.

A learnt representation is only worth its training time by how far it beats both.
"""

from __future__ import annotations

import numpy as np

from jaxcl import probes

__all__ = ["linear_top1", "random_encoder_linear_top1", "raw_pixels_linear_top1"]


def linear_top1(config, num_classes, train_features, train_labels, test_features, test_labels):
    """Test top-1 of ``config.eval``'s linear evaluation on the given features."""
    return probes.linear_evaluation(
        train_features,
        train_labels,
        test_features,
        test_labels,
        num_classes=num_classes,
        epochs=config.eval.linear_epochs,
        batch_size=config.eval.linear_batch_size,
        learning_rate=config.eval.linear_learning_rate,
        weight_decay=config.eval.linear_weight_decay,
        seed=config.seed,
    )["linear_top1"]


def raw_pixels_linear_top1(config, num_classes: int, train, test) -> float:
    """Test top-1 of the linear evaluation protocol on flattened, standardised pixels.

    Args:
      config: a training config (its ``eval`` section and seed).
      num_classes: classes of the dataset.
      train: ``(images, labels)`` of the evaluation's training split.
      test: ``(images, labels)`` of its test split.

    Returns:
      Accuracy in [0, 1].
    """
    (train_images, train_labels), (test_images, test_labels) = train, test

    def flatten(images):
        return np.reshape(images, (len(images), -1))

    return linear_top1(
        config, num_classes, flatten(train_images), train_labels, flatten(test_images), test_labels
    )


def random_encoder_linear_top1(trainer, train, test) -> float:
    """Test top-1 of the linear evaluation of the run's encoder at initialisation.

    Args:
      trainer: the ``jaxcl.train.Trainer`` of the run (its initial state is
        the random encoder; BatchNorm uses its initial running statistics).
      train: ``(images, labels)`` of the evaluation's training split.
      test: ``(images, labels)`` of its test split.

    Returns:
      Accuracy in [0, 1].
    """
    config = trainer.config
    (train_images, train_labels), (test_images, test_labels) = train, test
    encode = trainer.encoder_fn(trainer.initial_state())
    batch = config.eval.feature_batch_size
    return linear_top1(
        config,
        trainer.num_classes,
        probes.extract_features(encode, train_images, batch_size=batch),
        train_labels,
        probes.extract_features(encode, test_images, batch_size=batch),
        test_labels,
    )
