"""Downstream linear probes on a learned representation (closed-form, NumPy).

Features are standardised with the training statistics before the probe, so a
probe judges which directions a representation keeps, not how it scales them
(a linear encoder W and ``D W`` for diagonal D > 0 get the same score up to the
small ridge).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "knn_classification_probe",
    "linear_classification_probe",
    "linear_regression_probe",
]


def _standardise(train_features, test_features):
    train_features = np.asarray(train_features, np.float64)
    test_features = np.asarray(test_features, np.float64)
    mean = train_features.mean(axis=0)
    std = train_features.std(axis=0) + 1e-12
    with_bias = lambda f: np.concatenate([(f - mean) / std, np.ones((len(f), 1))], axis=1)  # noqa: E731
    return with_bias(train_features), with_bias(test_features)


def _ridge_fit(features, targets, ridge):
    gram = features.T @ features + ridge * len(features) * np.eye(features.shape[1])
    return np.linalg.solve(gram, features.T @ targets)


def linear_regression_probe(
    train_features, train_targets, test_features, test_targets, *, ridge: float = 1e-6
) -> float:
    """Ridge regression from features to targets; returns the test R^2.

    Args:
      train_features: (n, k) representation of the training examples.
      train_targets: (n,) or (n, m) regression targets.
      test_features: (n', k) representation of held-out examples.
      test_targets: (n',) or (n', m) held-out targets.
      ridge: penalty per example on the standardised features.

    Returns:
      ``1 - ||y - y_hat||^2 / ||y - mean(y)||^2`` on the test set, summed over
      target columns (1 is perfect, 0 is the constant predictor).
    """
    train_x, test_x = _standardise(train_features, test_features)
    train_y = np.asarray(train_targets, np.float64)
    test_y = np.asarray(test_targets, np.float64)
    coefficients = _ridge_fit(train_x, train_y, ridge)
    residual = np.sum(np.square(test_y - test_x @ coefficients))
    total = np.sum(np.square(test_y - test_y.mean(axis=0)))
    return float(1.0 - residual / total)


def linear_classification_probe(
    train_features, train_labels, test_features, test_labels, *, ridge: float = 1e-6
) -> float:
    """A least-squares linear classifier on one-hot labels; returns test accuracy.

    Least squares on one-hot targets (then argmax) is a linear classifier with
    a closed form: deterministic and instant, which matters inside sweeps; on
    the Gaussian tasks here it ranks representations as logistic regression does.

    Args:
      train_features: (n, k) representation of the training examples.
      train_labels: (n,) integer labels in [0, C).
      test_features: (n', k) representation of held-out examples.
      test_labels: (n',) integer labels.
      ridge: penalty per example on the standardised features.

    Returns:
      The fraction of correctly classified test examples.
    """
    train_x, test_x = _standardise(train_features, test_features)
    train_labels = np.asarray(train_labels)
    num_classes = int(max(train_labels.max(), np.max(test_labels))) + 1
    one_hot = np.eye(num_classes)[train_labels]
    coefficients = _ridge_fit(train_x, one_hot, ridge)
    predictions = np.argmax(test_x @ coefficients, axis=1)
    return float(np.mean(predictions == np.asarray(test_labels)))


def knn_classification_probe(
    train_features, train_labels, test_features, test_labels, *, k: int = 10
) -> float:
    """k-nearest-neighbour accuracy under cosine similarity (majority vote).

    Unlike the linear probes it does not standardise the features: it judges
    the geometry of the normalised embedding itself, which is what alignment
    and uniformity describe (a nearly collapsed embedding keeps linearly
    separable residues that a standardising probe would blow up).

    Args:
      train_features: (n, k) labelled reference embeddings.
      train_labels: (n,) integer labels.
      test_features: (n', k) embeddings to classify.
      test_labels: (n',) integer labels.
      k: number of neighbours.

    Returns:
      The fraction of correctly classified test examples.
    """
    normalise = lambda f: f / (np.linalg.norm(f, axis=1, keepdims=True) + 1e-12)  # noqa: E731
    train_x = normalise(np.asarray(train_features, np.float64))
    test_x = normalise(np.asarray(test_features, np.float64))
    train_labels = np.asarray(train_labels)
    # argpartition: only the k nearest are needed, not a full sort of every row.
    neighbours = np.argpartition(-(test_x @ train_x.T), k - 1, axis=1)[:, :k]
    votes = train_labels[neighbours]
    num_classes = int(train_labels.max()) + 1
    counts = np.stack([np.sum(votes == c, axis=1) for c in range(num_classes)], axis=1)
    return float(np.mean(np.argmax(counts, axis=1) == np.asarray(test_labels)))
