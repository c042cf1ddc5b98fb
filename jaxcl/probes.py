"""Evaluation of frozen representations: linear probe, weighted kNN, alignment/uniformity.

The offline linear evaluation follows SimCLR's protocol on a frozen encoder: a
linear classifier trained with Nesterov-momentum SGD (lr 0.1 scaled by B/256,
cosine decay, no weight decay by default). Unlike SimCLR, which augments the
training images with random crops and flips during linear evaluation, jaxcl
extracts the features once from un-augmented images and trains on those: much
faster on a CPU, and the usual choice for small images (it tends to give a
slightly lower number than an augmented probe). Features are standardised with
the training set's mean and standard deviation so one learning rate fits every
encoder.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcl import losses

__all__ = [
    "alignment_uniformity",
    "extract_features",
    "knn_accuracy",
    "linear_evaluation",
]


def extract_features(
    encode: Callable[[jax.Array], jax.Array], images: np.ndarray, *, batch_size: int = 1024
) -> np.ndarray:
    """Runs ``encode`` over ``images`` in batches and returns float32 features.

    The last partial batch is padded to ``batch_size`` so ``encode`` compiles once.

    Args:
      encode: a (jitted) function from (B, H, W, C) images to (B, d) features.
      images: (N, H, W, C) array.
      batch_size: images per call.

    Returns:
      (N, d) float32 NumPy features.
    """
    outputs = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        valid = len(chunk)
        if valid < batch_size:
            padding = np.zeros((batch_size - valid, *chunk.shape[1:]), chunk.dtype)
            chunk = np.concatenate([chunk, padding])
        outputs.append(np.asarray(encode(jnp.asarray(chunk)), np.float32)[:valid])
    return np.concatenate(outputs)


@functools.partial(jax.jit, static_argnums=(3,))
def _knn_votes(test_features, train_features, train_one_hot, k, temperature):
    similarity = losses.l2_normalize(test_features) @ losses.l2_normalize(train_features).T
    top_similarity, top_index = jax.lax.top_k(similarity, k)
    weights = jnp.exp(top_similarity / temperature)
    return jnp.einsum("nk,nkc->nc", weights, train_one_hot[top_index])


def knn_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    batch_size: int = 1024,
) -> float:
    """Top-1 accuracy of the weighted kNN classifier on cosine similarity.

    Each test point votes with its k most similar training points, weighted by
    ``exp(similarity / temperature)`` (Wu et al. 2018, the monitor of MoCo and
    solo-learn; k 200, temperature 0.1).

    Args:
      train_features, train_labels: the memory bank, (N, d) and (N,).
      test_features, test_labels: the points to classify, (M, d) and (M,).
      num_classes: number of classes.
      k: neighbours (clipped to N).
      temperature: vote temperature.
      batch_size: test points per similarity block (bounds memory).

    Returns:
      Accuracy in [0, 1].

    References:
      Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
      Discrimination", CVPR 2018, https://arxiv.org/abs/1805.01978
    """
    k = min(k, len(train_features))
    one_hot = jax.nn.one_hot(jnp.asarray(train_labels), num_classes)
    train_features = jnp.asarray(train_features)
    correct = 0
    for start in range(0, len(test_features), batch_size):
        votes = _knn_votes(
            jnp.asarray(test_features[start : start + batch_size]),
            train_features,
            one_hot,
            k,
            temperature,
        )
        predicted = np.asarray(jnp.argmax(votes, axis=1))
        correct += int(np.sum(predicted == test_labels[start : start + batch_size]))
    return correct / len(test_features)


def linear_evaluation(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    epochs: int = 100,
    batch_size: int = 512,
    learning_rate: float = 0.1,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> dict[str, float]:
    """Trains a linear classifier on frozen features and reports its accuracy.

    SimCLR's linear-evaluation optimiser: SGD with Nesterov momentum 0.9, peak
    rate ``learning_rate * batch_size / 256`` with cosine decay, cross-entropy,
    L2 weight decay on the weights. Each epoch is one ``jax.lax.scan`` over a
    fresh permutation, so the whole fit is a few compiled calls.

    Args:
      train_features, train_labels: (N, d) features and (N,) int labels.
      test_features, test_labels: (M, d) and (M,).
      num_classes: number of classes.
      epochs: passes over the training features.
      batch_size: examples per step (clipped to N).
      learning_rate: base rate, scaled linearly with the batch size.
      weight_decay: L2 penalty on the weights.
      seed: seed of the initialisation-free shuffling.

    Returns:
      ``{'linear_top1': test accuracy, 'linear_train_top1': train accuracy}``.

    References:
      Chen et al. 2020 (SimCLR), Appendix B.5, https://arxiv.org/abs/2002.05709
    """
    train_features = np.asarray(train_features, np.float32)
    mean = train_features.mean(axis=0)
    std = train_features.std(axis=0) + 1e-6
    x_train = jnp.asarray((train_features - mean) / std)
    x_test = jnp.asarray((np.asarray(test_features, np.float32) - mean) / std)
    y_train = jnp.asarray(train_labels, jnp.int32)
    num_examples, dim = x_train.shape
    batch_size = min(batch_size, num_examples)
    steps_per_epoch = num_examples // batch_size
    schedule = optax.cosine_decay_schedule(
        learning_rate * batch_size / 256, decay_steps=max(1, epochs * steps_per_epoch)
    )
    optimizer = optax.chain(
        optax.add_decayed_weights(weight_decay, mask={"kernel": True, "bias": False}),
        optax.sgd(schedule, momentum=0.9, nesterov=True),
    )
    params = {"kernel": jnp.zeros((dim, num_classes)), "bias": jnp.zeros((num_classes,))}
    opt_state = optimizer.init(params)

    def loss_fn(params, x, y):
        logits = x @ params["kernel"] + params["bias"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def run_epoch(params, opt_state, key):
        order = jax.random.permutation(key, num_examples)[: steps_per_epoch * batch_size]
        batches = order.reshape(steps_per_epoch, batch_size)

        def step(carry, indices):
            params, opt_state = carry
            grads = jax.grad(loss_fn)(params, x_train[indices], y_train[indices])
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), batches)
        return params, opt_state

    key = jax.random.key(seed)
    for epoch in range(epochs):
        params, opt_state = run_epoch(params, opt_state, jax.random.fold_in(key, epoch))

    def accuracy(x, y):
        logits = x @ params["kernel"] + params["bias"]
        return float(np.mean(np.asarray(jnp.argmax(logits, axis=1)) == np.asarray(y)))

    return {
        "linear_top1": accuracy(x_test, test_labels),
        "linear_train_top1": accuracy(x_train, train_labels),
    }


def alignment_uniformity(features_view1: np.ndarray, features_view2: np.ndarray) -> dict:
    """Wang & Isola's metrics of paired features (two augmentations of each image).

    Args:
      features_view1, features_view2: (N, d) features; row i of each comes from
        the same image.

    Returns:
      ``{'alignment': ..., 'uniformity': ...}`` (alpha 2, t 2; uniformity over
      the first view, computed in blocks of at most 8192 rows and averaged).
    """
    block = 8192
    uniformities = [
        float(losses.uniformity(jnp.asarray(features_view1[i : i + block])))
        for i in range(0, len(features_view1), block)
        if len(features_view1[i : i + block]) > 1
    ]
    return {
        "alignment": float(losses.alignment(features_view1, features_view2)),
        "uniformity": float(np.mean(uniformities)) if uniformities else math.nan,
    }
