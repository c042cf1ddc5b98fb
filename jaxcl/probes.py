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
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcl import losses
from jaxcl.distributed import DATA_AXIS

__all__ = [
    "alignment_uniformity",
    "extract_features",
    "knn_accuracy",
    "linear_evaluation",
    "local_mesh",
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


def local_mesh() -> Mesh:
    """A one-device ``'data'`` mesh of this process: the probes' default."""
    return Mesh(np.array(jax.local_devices()[:1]), (DATA_AXIS,))


def _rows_on_mesh(x: np.ndarray, mesh: Mesh, fill) -> jax.Array:
    """Host rows sharded over ``'data'``, padded with ``fill`` to a multiple of its size."""
    padding = -len(x) % mesh.size
    if padding:
        x = np.concatenate([x, np.full((padding, *x.shape[1:]), fill, x.dtype)])
    return jax.make_array_from_callback(x.shape, NamedSharding(mesh, P(DATA_AXIS)), x.__getitem__)


def _replicated_on_mesh(x: np.ndarray, mesh: Mesh) -> jax.Array:
    return jax.make_array_from_callback(x.shape, NamedSharding(mesh, P()), x.__getitem__)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _knn_predict(mesh, k, num_classes, test_block, bank, bank_labels, temperature):
    """Predicted classes of a replicated test block against a row-sharded memory bank."""

    def per_device(test_block, bank, bank_labels):
        similarity = losses.l2_normalize(test_block) @ losses.l2_normalize(bank).T
        similarity = jnp.where(bank_labels[None, :] >= 0, similarity, -jnp.inf)  # padding
        local_similarity, local_index = jax.lax.top_k(similarity, min(k, bank.shape[0]))
        # The k nearest overall are among the union of every shard's k nearest.
        candidates = jax.lax.all_gather(local_similarity, DATA_AXIS, axis=1, tiled=True)
        candidate_labels = jax.lax.all_gather(
            bank_labels[local_index], DATA_AXIS, axis=1, tiled=True
        )
        top_similarity, top = jax.lax.top_k(candidates, k)
        top_labels = jnp.take_along_axis(candidate_labels, top, axis=1)
        weights = jnp.exp(top_similarity / temperature)  # padding: exp(-inf) = 0
        votes = jnp.einsum("nk,nkc->nc", weights, jax.nn.one_hot(top_labels, num_classes))
        return jnp.argmax(votes, axis=1)

    # Every device ends with the same candidates (all_gather), hence the same
    # prediction: replicated by construction, which the checker cannot infer.
    return jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)),
        out_specs=P(),
        check_vma=False,
    )(test_block, bank, bank_labels)


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
    mesh: Mesh | None = None,
) -> float:
    """Top-1 accuracy of the weighted kNN classifier on cosine similarity.

    Each test point votes with its k most similar training points, weighted by
    ``exp(similarity / temperature)`` (Wu et al. 2018, the monitor of MoCo and
    solo-learn; k 200, temperature 0.1). The memory bank is sharded over the
    mesh's devices (each holds N / devices rows, so ImageNet's 1.28M x 2048 bank
    fits); each device finds the k nearest of its rows and the k nearest of
    those candidates are the exact k nearest, so the result does not depend on
    the number of devices.

    Args:
      train_features, train_labels: the memory bank, (N, d) and (N,).
      test_features, test_labels: the points to classify, (M, d) and (M,).
      num_classes: number of classes.
      k: neighbours (clipped to N).
      temperature: vote temperature.
      batch_size: test points per similarity block (bounds memory).
      mesh: the ``'data'`` mesh to run on (default: one local device); every
        process passes the same features.

    Returns:
      Accuracy in [0, 1].

    References:
      Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance
      Discrimination", CVPR 2018, https://arxiv.org/abs/1805.01978
    """
    mesh = mesh if mesh is not None else local_mesh()
    k = min(k, len(train_features))
    bank = _rows_on_mesh(np.asarray(train_features, np.float32), mesh, 0.0)
    bank_labels = _rows_on_mesh(np.asarray(train_labels, np.int32), mesh, -1)
    test_features = np.asarray(test_features, np.float32)
    correct = 0
    for start in range(0, len(test_features), batch_size):
        block = test_features[start : start + batch_size]
        valid = len(block)
        if valid < batch_size and start > 0:  # one shape for every block
            padding = np.zeros((batch_size - valid, block.shape[1]), block.dtype)
            block = np.concatenate([block, padding])
        predicted = _knn_predict(
            mesh, k, num_classes, _replicated_on_mesh(block, mesh), bank, bank_labels, temperature
        )
        predicted = np.asarray(predicted.addressable_shards[0].data)[:valid]
        correct += int(np.sum(predicted == test_labels[start : start + batch_size]))
    return correct / len(test_features)


def _linear_logits(params, x):
    return x @ params["kernel"] + params["bias"]


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
    mesh: Mesh | None = None,
) -> dict[str, float]:
    """Trains a linear classifier on frozen features and reports its accuracy.

    SimCLR's linear-evaluation optimiser: SGD with Nesterov momentum 0.9, peak
    rate ``learning_rate * batch_size / 256`` with cosine decay, cross-entropy,
    L2 weight decay on the weights. Data parallel over the mesh: each device
    holds N / devices of the features (the last N mod devices are left out) and
    takes batch_size / devices of each batch from its own rows in a fresh
    per-device permutation every epoch; the gradients are averaged. Each epoch
    is one ``jax.lax.scan``, so the whole fit is a few compiled calls.

    Args:
      train_features, train_labels: (N, d) features and (N,) int labels.
      test_features, test_labels: (M, d) and (M,).
      num_classes: number of classes.
      epochs: passes over the training features.
      batch_size: examples per step over all devices (clipped to N, rounded
        down to a multiple of the devices).
      learning_rate: base rate, scaled linearly with the batch size.
      weight_decay: L2 penalty on the weights.
      seed: seed of the shuffling (the classifier starts at zero).
      mesh: the ``'data'`` mesh to run on (default: one local device); every
        process passes the same features.

    Returns:
      ``{'linear_top1': test accuracy, 'linear_train_top1': train accuracy}``.

    References:
      Chen et al. 2020 (SimCLR), Appendix B.5, https://arxiv.org/abs/2002.05709
    """
    mesh = mesh if mesh is not None else local_mesh()
    devices = mesh.size
    train_features = np.asarray(train_features, np.float32)
    mean = train_features.mean(axis=0)
    std = train_features.std(axis=0) + 1e-6
    usable = len(train_features) // devices * devices
    if usable == 0:
        raise ValueError(f"linear_evaluation needs at least {devices} training examples")
    # In place after the subtraction: one copy of the features, not two
    # (ImageNet's train features are 10.5 GB).
    x_train = train_features[:usable] - mean
    x_train /= std
    y_train = np.asarray(train_labels, np.int32)[:usable]
    x_test = np.asarray(test_features, np.float32) - mean
    x_test /= std
    local_examples, dim = usable // devices, x_train.shape[1]
    local_batch = max(1, min(batch_size, usable) // devices)
    steps_per_epoch = local_examples // local_batch
    schedule = optax.cosine_decay_schedule(
        learning_rate * local_batch * devices / 256, decay_steps=max(1, epochs * steps_per_epoch)
    )
    optimizer = optax.chain(
        optax.add_decayed_weights(weight_decay, mask={"kernel": True, "bias": False}),
        optax.sgd(schedule, momentum=0.9, nesterov=True),
    )

    @functools.partial(jax.jit, out_shardings=NamedSharding(mesh, P()))
    def initial():
        params = {"kernel": jnp.zeros((dim, num_classes)), "bias": jnp.zeros((num_classes,))}
        return params, optimizer.init(params)

    params, opt_state = initial()

    def loss_fn(params, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(_linear_logits(params, x), y).mean()

    def device_epoch(params, opt_state, x, y, key):
        key = jax.random.fold_in(key, jax.lax.axis_index(DATA_AXIS))
        order = jax.random.permutation(key, local_examples)[: steps_per_epoch * local_batch]

        def step(carry, indices):
            params, opt_state = carry
            grads = jax.grad(loss_fn)(params, x[indices], y[indices])
            grads = jax.lax.pmean(grads, DATA_AXIS)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        batches = order.reshape(steps_per_epoch, local_batch)
        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), batches)
        return params, opt_state

    run_epoch = jax.jit(
        jax.shard_map(
            device_epoch,
            mesh=mesh,
            in_specs=(P(), P(), P(DATA_AXIS), P(DATA_AXIS), P()),
            out_specs=(P(), P()),
        )
    )

    def device_correct(params, x, y):
        hits = (jnp.argmax(_linear_logits(params, x), axis=1) == y).sum()
        return jax.lax.psum(hits, DATA_AXIS)

    count_correct = jax.jit(
        jax.shard_map(
            device_correct, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)), out_specs=P()
        )
    )

    x_train_on_mesh = _rows_on_mesh(x_train, mesh, 0.0)
    y_train_on_mesh = _rows_on_mesh(y_train, mesh, -1)
    key = jax.random.key(seed)
    for epoch in range(epochs):
        params, opt_state = run_epoch(
            params, opt_state, x_train_on_mesh, y_train_on_mesh, jax.random.fold_in(key, epoch)
        )

    def accuracy(x_on_mesh, y, count):
        # Padding rows have label -1, which no prediction equals.
        correct = count_correct(params, x_on_mesh, _rows_on_mesh(y, mesh, -1))
        return int(np.asarray(correct.addressable_shards[0].data)) / count

    return {
        "linear_top1": accuracy(
            _rows_on_mesh(x_test, mesh, 0.0), np.asarray(test_labels, np.int32), len(x_test)
        ),
        "linear_train_top1": accuracy(x_train_on_mesh, y_train, usable),
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
