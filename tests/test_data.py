"""Tests of the input pipeline: Fashion-MNIST builder, datasets, determinism, resume, shards."""

import contextlib
import gzip
import io
import logging
import re
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxcl import console, data
from jaxcl.data import augment, datasets, fashion_mnist_debian, pipeline
from jaxcl.data._tf import tf

SMALL = {"image_shape": (12, 12, 3), "num_classes": 5, "num_examples": {"train": 40, "test": 13}}


def _train(dataset="synthetic", **kwargs):
    kwargs = {
        "preset": "simclr_cifar",
        "global_batch_size": 8,
        "process_index": 0,
        "process_count": 1,
        "dataset_options": SMALL if dataset == "synthetic" else None,
        **kwargs,
    }
    return pipeline.make_train_iterator(dataset, **kwargs)


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ----------------------------------------------------------------- Fashion-MNIST


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory):
    """A TFDS data_dir holding fashion_mnist_debian, prepared once from the Debian files."""
    if not fashion_mnist_debian.source_files_exist():
        pytest.skip(f"Fashion-MNIST IDX files missing: {fashion_mnist_debian.INSTALL_HINT}")
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    start = time.perf_counter()
    said, console_logger = _Recorder(), logging.getLogger(console.CONSOLE_LOGGER)
    level = console_logger.level
    console_logger.addHandler(said)
    console_logger.setLevel(logging.INFO)
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            datasets.get_source("fashion_mnist", "train", data_dir)
    finally:
        console_logger.removeHandler(said)
        console_logger.setLevel(level)
    PREPARATION["said"], PREPARATION["stdout"] = said.messages, stdout.getvalue()
    print(f"prepared and loaded Fashion-MNIST train in {time.perf_counter() - start:.1f} s")
    return data_dir


# What preparing Fashion-MNIST once (the fixture above) told the person.
PREPARATION = {}


class _Recorder(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_preparing_fashion_mnist_says_so_in_one_line(fashion_dir):
    # One line names the dataset, where it went and how long it took; TFDS's
    # own stdout lines ("Downloading and preparing dataset Unknown size ...") are
    # kept for the log file.
    (line,) = PREPARATION["said"]
    assert re.fullmatch(
        rf"prepared fashion_mnist_debian in {re.escape(fashion_dir)}\S+ in \d+ s \(first use; "
        r"later runs read it from there\)",
        line,
    ), line
    assert PREPARATION["stdout"] == ""


def test_idx_files_read_and_validated(tmp_path):
    images, labels = fashion_mnist_debian.read_split(
        fashion_mnist_debian.DEFAULT_SOURCE_DIR, "test"
    )
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert labels[:5].tolist() == [9, 2, 1, 1, 6] and int(images[0].sum()) == 33_456
    assert np.bincount(labels).tolist() == [1000] * 10
    truncated = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(truncated, "wb") as f:  # Right header, too few bytes.
        f.write(np.array([2051, 10_000, 28, 28], ">u4").tobytes() + b"\0" * 100)
    with pytest.raises(ValueError, match="not a Fashion-MNIST IDX image file"):
        fashion_mnist_debian.read_idx_images(truncated, 10_000)


def test_fashion_mnist_builder(fashion_dir):
    builder = fashion_mnist_debian.FashionMnistDebian(data_dir=fashion_dir)
    assert builder.is_prepared()
    assert builder.info.splits["train"].num_examples == 60_000
    assert builder.info.splits["test"].num_examples == 10_000
    assert builder.info.features["label"].num_classes == 10
    source = datasets.get_source("fashion_mnist", "train", fashion_dir)
    assert source.images_np.shape == (60_000, 28, 28, 1)
    assert np.bincount(source.labels_np).tolist() == [6000] * 10
    # Same pixels as the IDX file, in TFDS's stored order.
    assert int(source.images_np.sum(dtype=np.int64)) == 3_431_114_169
    first = np.flatnonzero(source.images_np.reshape(60_000, -1).sum(1) == 76_247)
    assert any(source.labels_np[i] == 9 for i in first)  # IDX train[0]: ankle boot.


def test_fashion_mnist_train_and_eval(fashion_dir):
    it = _train("fashion_mnist", preset="fashion_mnist", global_batch_size=16, data_dir=fashion_dir)
    batch = next(it)
    assert batch["views"].shape == (16, 2, 28, 28, 1) and batch["views"].dtype == np.float32
    assert batch["views"].min() >= 0.0 and batch["views"].max() <= 1.0
    assert batch["label"].dtype == np.int32 and batch["index"].dtype == np.int64
    assert (
        it.steps_per_epoch
        == 3750
        == pipeline.steps_per_epoch("fashion_mnist", "train", 16, data_dir=fashion_dir)
    )
    assert (
        pipeline.steps_per_epoch("fashion_mnist", "train[:1000]", 100, data_dir=fashion_dir) == 10
    )
    images, labels = data.make_eval_arrays("fashion_mnist", split="test", data_dir=fashion_dir)
    assert images.shape == (10_000, 28, 28, 1) and labels.dtype == np.int32
    assert np.bincount(labels).tolist() == [1000] * 10
    assert np.round(images * 255).astype(np.int64).sum() == 573_469_082


def test_fashion_mnist_streaming_matches_counts_and_resumes(fashion_dir):
    options = {"in_memory": False, "shuffle_buffer": 64}
    kwargs = {"preset": "fashion_mnist", "global_batch_size": 8, "data_dir": fashion_dir}
    full = _take(_train("fashion_mnist", dataset_options=options, **kwargs), 3)
    resumed = next(_train("fashion_mnist", dataset_options=options, start_step=2, **kwargs))
    _assert_batches_equal(full[2], resumed)
    shards = [
        next(
            _train(
                "fashion_mnist", dataset_options=options, process_index=p, process_count=2, **kwargs
            )
        )
        for p in range(2)
    ]
    assert not set(shards[0]["index"]) & set(shards[1]["index"])
    batches = list(
        data.make_eval_iterator(
            "fashion_mnist",
            split="test",
            global_batch_size=64,
            process_index=0,
            process_count=1,
            data_dir=fashion_dir,
            max_examples=100,
            dataset_options=options,
        )
    )
    assert len(batches) == 2 and sum(b["mask"].sum() for b in batches) == 100


def test_fashion_mnist_missing_everywhere_names_apt_package(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds, "builder", offline)
    with pytest.raises(RuntimeError, match="apt-get install dataset-fashion-mnist"):
        datasets.get_source("fashion_mnist", "train", str(tmp_path), {"source_dir": str(tmp_path)})


# ------------------------------------------------------------------ TFDS (mocked)


@pytest.mark.parametrize(
    ("name", "split", "shape"),
    [("cifar10", "train", (32, 32, 3)), ("cifar100", "test", (32, 32, 3)),
     ("stl10", "unlabelled", (96, 96, 3))],
)  # fmt: skip
def test_tfds_datasets_mocked(name, split, shape, tmp_path):
    datasets.clear_cache()
    try:
        with tfds.testing.mock_data(num_examples=20, policy=tfds.testing.MockPolicy.USE_CODE):
            batch = next(_train(name, split=split, global_batch_size=8, data_dir=str(tmp_path)))
            images, labels = data.make_eval_arrays(name, split=split, data_dir=str(tmp_path))
    finally:
        datasets.clear_cache()
    assert batch["views"].shape == (8, 2, *shape)
    assert images.shape == (20, *shape) and labels.shape == (20,)
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_imagenet_streaming_mocked(tmp_path):
    datasets.clear_cache()
    try:
        with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
            kwargs = {"preset": "simclr_imagenet", "image_size": 24, "data_dir": str(tmp_path)}
            batches = _take(_train("imagenet2012", **kwargs), 2)  # Crosses an epoch.
            resumed = next(_train("imagenet2012", start_step=1, **kwargs))
            evals = list(
                data.make_eval_iterator(
                    "imagenet2012",
                    split="validation",
                    image_size=24,
                    global_batch_size=4,
                    process_index=0,
                    process_count=1,
                    data_dir=str(tmp_path),
                )
            )
    finally:
        datasets.clear_cache()
    assert batches[0]["views"].shape == (8, 2, 24, 24, 3)
    _assert_batches_equal(batches[1], resumed)
    assert [e["image"].shape for e in evals] == [(4, 24, 24, 3)] * 3
    assert evals[-1]["mask"].tolist() == [True, True, False, False]


# ------------------------------------------------------- determinism and resumption


def test_same_seed_same_batches_other_seed_differs():
    a, b = _take(_train(seed=1), 3), _take(_train(seed=1), 3)
    for x, y in zip(a, b, strict=True):
        _assert_batches_equal(x, y)
    c = next(_train(seed=2))
    assert not np.array_equal(a[0]["index"], c["index"])
    assert not np.array_equal(a[0]["views"], c["views"])


def test_epochs_reshuffle_and_reaugment():
    it = _train(global_batch_size=10)  # 40 examples: 4 steps per epoch.
    epoch_0 = _take(it, 4)
    epoch_1 = _take(it, 4)
    indices_0 = np.concatenate([b["index"] for b in epoch_0])
    indices_1 = np.concatenate([b["index"] for b in epoch_1])
    assert sorted(indices_0) == sorted(indices_1) == list(range(40))  # Each example once.
    assert not np.array_equal(indices_0, indices_1)
    views_0 = np.concatenate([b["views"] for b in epoch_0])[np.argsort(indices_0)]
    views_1 = np.concatenate([b["views"] for b in epoch_1])[np.argsort(indices_1)]
    assert not np.any(np.all(views_0 == views_1, axis=(1, 2, 3, 4)))


@pytest.mark.parametrize("start_step", [3, 5, 11])
def test_resume_equals_uninterrupted(start_step):
    full = _take(_train(), start_step + 2)  # 40 examples, batch 8: 5 steps per epoch.
    resumed = _train(start_step=start_step)
    assert resumed.start_step == start_step
    for expected in full[start_step:]:
        _assert_batches_equal(expected, next(resumed))


def test_process_shards_concatenate_to_global_batch():
    global_batches = _take(_train(start_step=4), 2)
    for process_count in (2, 4):
        local = [
            _take(_train(start_step=4, process_index=p, process_count=process_count), 2)
            for p in range(process_count)
        ]
        for step, expected in enumerate(global_batches):
            shards = [local[p][step] for p in range(process_count)]
            assert all(len(s["index"]) == 8 // process_count for s in shards)
            indices = [set(s["index"].tolist()) for s in shards]
            assert sum(len(i) for i in indices) == len(set.union(*indices))  # Disjoint.
            for key in expected:
                np.testing.assert_array_equal(
                    np.concatenate([s[key] for s in shards]), expected[key], err_msg=key
                )


def test_byol_views_alternate_and_num_views():
    # BYOL's two views are asymmetric (blur always on view 0, solarize only on view 1);
    # with more views, view v must use config v % 2 and its own seed.
    seed, num_views, size = 3, 4, (16, 16)
    configs = augment.get_preset("byol")
    assert len(configs) == 2 and configs[0] != configs[1]
    assert (configs[0].blur_prob, configs[0].solarize_prob) == (1.0, 0.0)
    assert (configs[1].blur_prob, configs[1].solarize_prob) == (0.1, 0.2)
    batch = next(_train(preset="byol", num_views=num_views, image_size=16, seed=seed))
    views = batch["views"]
    assert views.shape == (8, num_views, 16, 16, 3)

    source = datasets.get_source("synthetic", "train", None, SMALL)
    differs_from_other_config = np.zeros(num_views, bool)
    for row, index in enumerate(batch["index"]):
        image, _ = source.get(tf.constant(index, tf.int64))
        image = tf.image.convert_image_dtype(image, tf.float32)
        for v in range(num_views):
            view_seed = augment.view_seed(seed, index, 0, v)  # the first batch is epoch 0

            def expected(config, view_seed=view_seed, image=image):
                return augment.augment_view(image, view_seed, size, config).numpy()

            np.testing.assert_allclose(
                views[row, v], expected(configs[v % 2]), atol=1e-5, err_msg=f"{row=} {v=}"
            )
            other = expected(configs[1 - v % 2])
            differs_from_other_config[v] |= np.abs(other - views[row, v]).max() > 1e-3
        # Views 0 and 2 share a config but not a seed.
        assert np.abs(views[row, 0] - views[row, 2]).max() > 1e-2
    # The comparison can tell the configs apart: with the same seed, the other
    # config's view differs for some example of the batch.
    assert differs_from_other_config.all()


def test_eval_iterator_pads_and_shards():
    kwargs = {"split": "test", "global_batch_size": 8, "dataset_options": SMALL}
    single = list(data.make_eval_iterator("synthetic", process_index=0, process_count=1, **kwargs))
    assert len(single) == 2 and single[-1]["mask"].sum() == 5
    assert single[-1]["label"][~single[-1]["mask"]].tolist() == [-1, -1, -1]
    halves = [
        list(data.make_eval_iterator("synthetic", process_index=p, process_count=2, **kwargs))
        for p in range(2)
    ]
    for step, expected in enumerate(single):
        for key in expected:
            got = np.concatenate([halves[0][step][key], halves[1][step][key]])
            np.testing.assert_array_equal(got, expected[key])
    images, labels = data.make_eval_arrays("synthetic", split="test", dataset_options=SMALL)
    assert images.shape == (13, 12, 12, 3) and labels.tolist() == [i % 5 for i in range(13)]


def test_dataset_info_and_steps():
    info = data.dataset_info("stl10")
    assert info.num_examples["unlabelled"] == 100_000 and info.num_classes == 10
    assert datasets.split_num_examples(info, "unlabelled+train") == 105_000
    assert data.dataset_info("fashion_mnist").image_shape == (28, 28, 1)
    assert data.dataset_info("synthetic", SMALL).image_shape == (12, 12, 3)
    assert data.steps_per_epoch("synthetic", "train", 16, dataset_options=SMALL) == 2


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown dataset 'no_such': not one of fashion_mnist"):
        _train("no_such")
    with pytest.raises(ValueError, match="unknown augmentation preset 'simclr'"):
        _train(preset="simclr")
    with pytest.raises(ValueError, match="not a positive multiple of process_count 3"):
        _train(process_count=3)
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        _train("cifar10", split="validation")
    with pytest.raises(ValueError, match="unknown dataset_options"):
        _train(dataset_options={"size": 3})
    with pytest.raises(ValueError, match="fewer than global_batch_size"):
        _train(global_batch_size=64)
