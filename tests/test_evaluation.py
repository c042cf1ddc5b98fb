"""Evaluation that scales like training: streamed features, probes on the mesh, eval splits."""

import importlib.util
import pathlib
import tracemalloc

import jax
import numpy as np
import pytest
from conftest import make_tiny_config

from jaxcl import data, features, probes
from jaxcl.config import ConfigError, validate_config
from jaxcl.data import DataSpec
from jaxcl.evaluation import KnnMonitor, evaluate_state
from jaxcl.train import Trainer

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"


def _recipe(name):
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _clusters(seed, n, num_classes=5, dim=16, spread=0.4):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(size=(num_classes, dim)) * spread
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    return (centers[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


def _brute_force_knn(train_x, train_y, test_x, test_y, k, temperature, num_classes):
    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    similarity = unit(test_x) @ unit(train_x).T
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    weights = np.exp(np.take_along_axis(similarity, nearest, axis=1) / temperature)
    votes = np.zeros((len(test_x), num_classes))
    for row in range(len(test_x)):
        np.add.at(votes[row], train_y[nearest[row]], weights[row])
    return float(np.mean(votes.argmax(axis=1) == test_y))


def test_knn_on_a_sharded_bank_equals_brute_force(mesh):
    # 1003 bank rows do not split over 8 devices: the padding must never vote.
    train_x, train_y = _clusters(0, 1003)
    test_x, test_y = _clusters(1, 301)
    expected = _brute_force_knn(train_x, train_y, test_x, test_y, 20, 0.1, 5)
    assert 0.4 < expected < 0.9  # a task where the neighbours matter
    for on in (None, mesh):
        top1 = probes.knn_accuracy(
            train_x, train_y, test_x, test_y, num_classes=5, k=20, batch_size=128, mesh=on
        )
        assert top1 == pytest.approx(expected, abs=1e-9)


def test_linear_probe_on_eight_devices_matches_one_device(mesh):
    train_x, train_y = _clusters(0, 1600)
    test_x, test_y = _clusters(1, 400)
    arguments = dict(num_classes=5, epochs=10, batch_size=64, learning_rate=0.1)
    one = probes.linear_evaluation(train_x, train_y, test_x, test_y, **arguments)
    eight = probes.linear_evaluation(train_x, train_y, test_x, test_y, mesh=mesh, **arguments)
    # The Bayes rate of these clusters is far above chance (0.2): the probe learns.
    assert one["linear_top1"] > 0.55
    # Other shuffles of the same data: the same accuracy to within noise.
    assert abs(one["linear_top1"] - eight["linear_top1"]) < 0.03
    assert abs(one["linear_train_top1"] - eight["linear_train_top1"]) < 0.03


def test_stream_features_keeps_every_real_example_once_in_order(mesh):
    # 37 examples in batches of 16 over 8 devices: the last batch is mostly padding.
    options = {"image_shape": (8, 8, 1), "num_classes": 3, "num_examples": {"test": 37}}
    images, labels = data.make_eval_arrays("synthetic", split="test", dataset_options=options)
    batches = data.make_eval_iterator(
        "synthetic", split="test", global_batch_size=16, dataset_options=options
    )
    streamed = features.stream_features(features.flatten_pixels, {}, batches, mesh)
    np.testing.assert_array_equal(streamed.labels, labels)
    np.testing.assert_allclose(streamed.features, images.reshape(37, -1))


def test_stream_features_memory_grows_with_features_not_pixels(mesh):
    # 200 batches of 64 images of 32x32x3 float32: 157 MB of images, 154 KB of features.
    rng = np.random.default_rng(0)
    image = rng.random((64, 32, 32, 3), dtype=np.float32)

    def batches():
        for _ in range(200):
            yield {
                "image": image.copy(),
                "label": np.zeros(64, np.int32),
                "mask": np.ones(64, bool),
            }

    def mean_colour(variables, images):
        return images.mean(axis=(1, 2))

    tracemalloc.start()
    try:
        streamed = features.stream_features(mean_colour, {}, batches(), mesh)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert streamed.features.shape == (200 * 64, 3)
    image_bytes = 200 * image.nbytes
    # A few batches in flight (the prefetch queue), never the whole split.
    assert peak < 8 * image.nbytes < image_bytes / 20


def test_eval_splits_are_the_datasets_own():
    imagenet = _recipe("simclr_imagenet")
    assert DataSpec.from_config(imagenet).eval_test_split == "validation"
    assert DataSpec.from_config(imagenet).eval_train_split == "train"
    fashion = _recipe("simclr_fashion_mnist")
    assert DataSpec.from_config(fashion).eval_test_split == "test"
    imagenet.eval_test_split = "test"
    with pytest.raises(ConfigError) as error:
        validate_config(imagenet, num_devices=1)
    assert (error.value.key, error.value.value) == ("eval_test_split", "test")


def test_raw_pixel_baseline_refused_where_it_cannot_fit():
    config = _recipe("simclr_imagenet")
    config.eval.baselines = True
    with pytest.raises(ConfigError) as error:
        validate_config(config, num_devices=1)
    assert error.value.key == "eval.baselines"
    assert "GiB" in str(error.value)


def test_training_crops_and_evaluation_images_have_their_own_sides():
    # FixRes-style: train on 12-pixel crops, evaluate the whole 16-pixel images.
    config = make_tiny_config(image_size=12, **{"eval.image_size": 16})
    validate_config(config, num_devices=1)
    one_device = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    trainer = Trainer(config, one_device)
    assert next(trainer.data.train_iterator())["views"].shape[2:4] == (12, 12)
    images, labels = trainer.data.eval_arrays("test")
    expected_images, expected_labels = data.make_eval_arrays(
        "synthetic", split="test", image_size=16, dataset_options=config.dataset_options
    )
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
    state = trainer.initial_state()
    variables = trainer.encoder_variables(state)
    streamed = features.stream_features(
        trainer.feature_fn, variables, trainer.data.eval_iterator("test", 16), one_device
    )
    direct = jax.jit(trainer.feature_fn)(variables, expected_images)
    np.testing.assert_allclose(streamed.features, direct, rtol=1e-5, atol=1e-6)
    # Larger than the images: refused, naming the key and the value.
    config.eval.image_size = 20
    with pytest.raises(ConfigError) as error:
        validate_config(config, num_devices=1)
    assert (error.value.key, error.value.value) == ("eval.image_size", 20)


def test_evaluation_on_eight_devices_matches_one_device(mesh):
    config = make_tiny_config(**{"eval.linear_epochs": 3, "eval.baselines": True})
    config.eval.feature_batch_size = 12  # rounded up to 16 on eight devices
    config.knn_k = 5
    one_device = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    results = {}
    for name, on in (("one", one_device), ("eight", mesh)):
        trainer = Trainer(config, on)
        results[name] = evaluate_state(trainer, trainer.initial_state())
    one, eight = results["one"], results["eight"]
    assert one["test_examples"] == eight["test_examples"] == 32
    np.testing.assert_allclose(one.test_features, eight.test_features, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(one.test_labels, eight.test_labels)
    # kNN is exact on any mesh; alignment and uniformity use the same features.
    assert one["knn_top1"] == eight["knn_top1"]
    assert one["alignment"] == pytest.approx(eight["alignment"], rel=1e-4)
    assert one["uniformity"] == pytest.approx(eight["uniformity"], rel=1e-4)
    for key in ("baseline_raw_pixels_top1", "baseline_random_encoder_top1"):
        assert 0.0 <= one[key] <= 1.0


def test_knn_monitor_scores_the_eval_subsets(mesh):
    config = make_tiny_config(knn_every_steps=2, knn_train_examples=48, knn_k=5)
    trainer = Trainer(config, mesh)
    monitor = KnnMonitor(trainer)
    state = trainer.initial_state()
    assert monitor(1, state, False) == {}
    top1 = monitor(2, state, False)["knn_top1"]
    # The same subsets through the probe directly.
    variables = trainer.encoder_variables(state)
    train = features.stream_features(
        trainer.feature_fn,
        variables,
        trainer.data.eval_iterator("train", 16, 48),
        mesh,
    )
    test = features.stream_features(
        trainer.feature_fn, variables, trainer.data.eval_iterator("test", 16, 1000), mesh
    )
    assert len(train.labels) == 48 and len(test.labels) == 32
    expected = probes.knn_accuracy(
        train.features, train.labels, test.features, test.labels, num_classes=4, k=5
    )
    assert top1 == pytest.approx(expected)
