"""Any TFDS dataset by name: its DatasetInfo from the builder, read in TFDS's on-disk format."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tiny_tfds  # noqa: F401 (registers the jaxcl_tiny_shapes builder)
from conftest import make_tiny_config

from jaxcl import data
from jaxcl.config import ConfigError, validate_config
from jaxcl.run import train_and_evaluate

FIXED = "jaxcl_tiny_shapes/fixed"
PHOTOS = "jaxcl_tiny_shapes/photos"
PHOTO_KEYS = {"image_key": "photo", "label_key": "kind"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A TFDS data_dir where both configs are prepared by TFDS itself."""
    directory = str(tmp_path_factory.mktemp("tfds"))
    data.prepare_dataset(FIXED, directory)
    data.prepare_dataset(PHOTOS, directory)
    return directory


def test_info_comes_from_the_prepared_builder(data_dir):
    info = data.dataset_info(FIXED, data_dir=data_dir)
    assert info.num_examples == {"train": 24, "test": 12}
    assert info.image_shape == (20, 20, 3) and info.num_classes == 3 and info.labelled
    assert info.eval_splits == ("train", "test") and info.pretrain_split == "train"
    assert info.default_image_size == 20 and info.eval_crop_fraction == 1.0
    photos = data.dataset_info(PHOTOS, PHOTO_KEYS, data_dir=data_dir)
    assert photos.num_examples == {"train": 24, "test": 12, "extra": 6}
    assert photos.image_shape == (None, None, 3) and photos.num_classes == 3
    # Varying sizes: SimCLR's ImageNet evaluation crop and side by default.
    assert photos.eval_crop_fraction == 0.875 and photos.default_image_size == 224
    without_labels = data.dataset_info(PHOTOS, {"image_key": "photo"}, data_dir=data_dir)
    assert not without_labels.labelled  # no feature named 'label'


def test_feature_names_that_do_not_exist_are_one_line_errors(data_dir):
    with pytest.raises(ValueError, match=r"no image feature 'image'.*one of \['photo'\]"):
        data.dataset_info(PHOTOS, data_dir=data_dir)
    with pytest.raises(ValueError, match=r"no class label 'caption'; use one of \['kind'\]"):
        data.dataset_info(PHOTOS, {"image_key": "photo", "label_key": "caption"}, data_dir=data_dir)
    with pytest.raises(ValueError, match=r"unknown dataset_options \['root'\]"):
        data.dataset_info(FIXED, {"root": "/x"}, data_dir=data_dir)


def test_unknown_and_unprepared_names_fail_in_validation(tmp_path):
    config = make_tiny_config(dataset="jaxcl_tiny_shape", dataset_options={})
    with pytest.raises(ConfigError, match="unknown dataset 'jaxcl_tiny_shape'") as error:
        validate_config(config, num_devices=1)
    assert error.value.key == "dataset" and "\n" not in str(error.value)
    config = make_tiny_config(dataset=FIXED, dataset_options={}, data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="is not prepared in data_dir") as error:
        validate_config(config, num_devices=1, check_data_files=False)
    assert f"tfds build {FIXED}" in str(error.value)
    # With the data wanted, validation prepares it (TFDS writes its files).
    validate_config(config, num_devices=1)
    assert data.is_prepared(FIXED, str(tmp_path))


def test_streamed_photos_are_read_once_each_with_their_labels(data_dir):
    options = {**PHOTO_KEYS, "in_memory": False}
    batches = list(
        data.make_eval_iterator(
            PHOTOS, split="test", image_size=16, global_batch_size=5,
            data_dir=data_dir, dataset_options=options,
            process_index=0, process_count=1,
        )
    )  # fmt: skip
    images = np.concatenate([b["image"][b["mask"]] for b in batches])
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    assert images.shape == (12, 16, 16, 3) and sum(len(b["mask"]) for b in batches) == 15
    np.testing.assert_array_equal(np.sort(labels), np.repeat([0, 1, 2], 4))
    # Each image keeps its class colour through JPEG, the crop and the resize.
    np.testing.assert_array_equal(images.mean(axis=(1, 2)).argmax(axis=1), labels)


def test_a_tfds_dataset_by_name_trains_and_evaluates(data_dir, tmp_path):
    config = make_tiny_config(
        num_steps=3,
        dataset=FIXED,
        dataset_options={},
        data_dir=data_dir,
        image_size=16,
        augmentation="simclr_cifar",
        global_batch_size=8,
        **{"eval.run_at_end": True, "eval.linear_epochs": 30},
    )
    config.knn_k = 5
    results = train_and_evaluate(config, str(tmp_path / "run"))
    assert results["train_examples"] == 24 and results["test_examples"] == 12
    assert results["step"] == 3
    # Colours separate the classes even through a barely trained encoder.
    assert results["linear_top1"] >= 0.75, results


def test_a_prepared_dataset_reads_without_its_builder_code(data_dir):
    """What `tfds build` leaves in a data_dir is enough: a process that never
    imported the builder reads the same DatasetInfo and pixels."""
    script = textwrap.dedent(f"""
        import numpy as np
        from jaxcl import data
        info = data.dataset_info({FIXED!r}, data_dir={data_dir!r})
        images, labels = data.make_eval_arrays(
            {FIXED!r}, split="test", image_size=20, data_dir={data_dir!r})
        print(info.num_examples, info.num_classes, images.shape, labels.tolist())
        np.save({data_dir + "/images.npy"!r}, images)
    """)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "{'train': 24, 'test': 12} 3 (12, 20, 20, 3)" in out.stdout
    images, _ = data.make_eval_arrays(FIXED, split="test", image_size=20, data_dir=data_dir)
    np.testing.assert_array_equal(np.load(data_dir + "/images.npy"), images)
