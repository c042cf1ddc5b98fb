"""Users' own images: generated PNG/JPEG folders through the same pipeline and evaluation."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import make_tiny_config

from jaxcl import data
from jaxcl.config import ConfigError, validate_config
from jaxcl.data import image_folder
from jaxcl.run import train_and_evaluate

COLOURS = {"blue": (0, 0, 230), "green": (0, 200, 0), "red": (220, 0, 0)}


def _write_image(path, colour, size, rng):
    noise = rng.integers(0, 40, (*size, 3))
    pixels = np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8)
    encode = tf.io.encode_png if path.suffix == ".png" else tf.io.encode_jpeg
    path.write_bytes(encode(pixels).numpy())


def make_folder(root, splits={"train": 6, "test": 3}, flat=False):  # noqa: B006 (read only)
    """Class-coloured images of mixed sizes and formats under ``root``."""
    rng = np.random.default_rng(0)
    for split, per_class in splits.items():
        for name, colour in COLOURS.items():
            directory = root if flat else root / split / name
            directory.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                suffix = ".png" if i % 2 else ".JPG"
                size = (20 + 4 * (i % 3), 24)  # images of different shapes
                _write_image(directory / f"{split}_{name}_{i}{suffix}", colour, size, rng)
    return root


def test_scan_finds_splits_classes_and_formats(tmp_path):
    root = make_folder(tmp_path / "images")
    (root / "train" / "red" / "notes.txt").write_text("not an image")
    splits, class_names = image_folder.scan(str(root))
    assert class_names == ("blue", "green", "red")
    paths, labels = splits["train"]
    assert len(paths) == 18 and labels == (0,) * 6 + (1,) * 6 + (2,) * 6
    assert all("/train/" in p for p in paths) and not any(p.endswith(".txt") for p in paths)
    info = data.dataset_info("image_folder", {"root": str(root)})
    assert info.num_examples == {"test": 9, "train": 18}
    assert info.eval_splits == ("train", "test") and info.num_classes == 3


def test_class_folders_without_splits_are_one_train_split(tmp_path):
    make_folder(tmp_path / "images", splits={"train": 2})
    splits, class_names = image_folder.scan(str(tmp_path / "images" / "train"))
    assert list(splits) == ["train"] and class_names == ("blue", "green", "red")


def test_images_are_decoded_whatever_their_size(tmp_path):
    root = make_folder(tmp_path / "images", splits={"test": 3})
    images, labels = data.make_eval_arrays(
        "image_folder", split="test", image_size=16, dataset_options={"root": str(root)}
    )
    assert images.shape == (9, 16, 16, 3)
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    # Each image keeps its colour: the class's channel dominates.
    dominant = images.mean(axis=(1, 2)).argmax(axis=1)
    np.testing.assert_array_equal(dominant, [2, 2, 2, 1, 1, 1, 0, 0, 0])  # blue, green, red


def test_image_folder_trains_and_evaluates(tmp_path):
    root = make_folder(tmp_path / "images", splits={"train": 12, "test": 4})
    config = make_tiny_config(
        num_steps=3,
        dataset="image_folder",
        dataset_options={"root": str(root)},
        augmentation="simclr_cifar",
        global_batch_size=8,
        **{"eval.run_at_end": True, "eval.linear_epochs": 20},
    )
    config.knn_k = 5
    results = train_and_evaluate(config, str(tmp_path / "run"))
    assert results["train_examples"] == 36 and results["test_examples"] == 12
    # Colour classes are linearly separable in any encoder's features.
    assert results["linear_top1"] >= 0.9
    assert results["knn_top1"] >= 0.9


def test_unlabelled_folder_pretrains_but_refuses_the_probes(tmp_path):
    root = make_folder(tmp_path / "flat", splits={"train": 4}, flat=True)
    config = make_tiny_config(
        dataset="image_folder", dataset_options={"root": str(root)}, augmentation="simclr_cifar"
    )
    info = data.dataset_info("image_folder", {"root": str(root)})
    assert not info.labelled and info.num_examples == {"train": 12}
    validate_config(config, num_devices=1)  # eval.run_at_end is off in the tiny config
    config.eval.run_at_end = True
    with pytest.raises(ConfigError) as error:
        validate_config(config, num_devices=1)
    assert (error.value.key, error.value.value) == ("eval.run_at_end", True)


def test_missing_root_is_a_one_line_config_error(tmp_path):
    config = make_tiny_config(
        dataset="image_folder", dataset_options={"root": str(tmp_path / "nowhere")}
    )
    with pytest.raises(ConfigError) as error:
        validate_config(config, num_devices=1)
    assert error.value.key == "dataset_options" and "nowhere" in str(error.value)
