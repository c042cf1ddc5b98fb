"""Transfer evaluation: a run's encoder scored on another dataset, resized and channel-adapted."""

import json
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_tiny_config

from jaxcl import data, load_encoder, probes
from jaxcl.run import train_and_evaluate
from jaxcl.transfer import TransferError, adapt_channels, evaluate_transfer

# Another dataset than the run's (16x16 grey, 4 classes): larger RGB images, 5 classes.
TARGET = {"image_shape": (24, 24, 3), "num_classes": 5, "num_examples": {"a": 40, "b": 20}}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    train_and_evaluate(make_tiny_config(num_steps=2), workdir)
    return workdir


def test_channels_are_adapted_by_luma_or_repetition():
    rgb = jnp.asarray([[[[1.0, 0.0, 0.0], [0.0, 1.0, 0.5]]]])
    np.testing.assert_allclose(adapt_channels(rgb, 1)[..., 0], [[[0.299, 0.587 + 0.057]]])
    grey = jnp.asarray([[[[0.25], [0.75]]]])
    np.testing.assert_array_equal(adapt_channels(grey, 3), jnp.repeat(grey, 3, axis=-1))
    assert adapt_channels(rgb, 3) is rgb
    with pytest.raises(TransferError, match="cannot adapt 2-channel images to an encoder of 3"):
        adapt_channels(jnp.zeros((1, 2, 2, 2)), 3)


def test_transfer_cli_scores_the_encoder_on_the_other_dataset(workdir):
    command = [
        sys.executable, "-m", "jaxcl.eval", f"--workdir={workdir}", "--dataset=synthetic",
        f"--dataset_options={json.dumps(TARGET)}", "--eval_train_split=a",
        "--eval_test_split=b",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout[out.stdout.index("{") :])
    assert results["train_examples"] == 40 and results["test_examples"] == 20
    assert results["dataset"] == "synthetic" and results["step"] == 2
    written = json.loads(Path(workdir, "transfer", "synthetic", "results.json").read_text())
    assert written == results
    # The same numbers by hand: the other dataset at the encoder's side (16),
    # RGB to grey, through load_encoder, scored with the run's kNN settings.
    encode = load_encoder(workdir)
    config = make_tiny_config()

    def features(split):
        images, labels = data.make_eval_arrays(
            "synthetic", split=split, image_size=16, dataset_options=TARGET
        )
        return np.asarray(encode(adapt_channels(jnp.asarray(images), 1))), labels

    (train, train_labels), (test, test_labels) = features("a"), features("b")
    expected = probes.knn_accuracy(
        train, train_labels, test, test_labels, num_classes=5,
        k=config.knn_k, temperature=config.knn_temperature,
    )  # fmt: skip
    assert results["knn_top1"] == pytest.approx(expected, abs=1e-6)
    assert 0.0 <= results["linear_top1"] <= 1.0 and results["linear_train_top1"] > 0.2


def test_bad_transfer_targets_fail_before_features(workdir, tmp_path):
    with pytest.raises(TransferError, match="--dataset=no_such: unknown dataset 'no_such'"):
        evaluate_transfer(workdir, "no_such")
    with pytest.raises(TransferError, match="unknown split 'validation' of 'synthetic'"):
        evaluate_transfer(workdir, "synthetic", eval_test_split="validation")
    two_channels = {"image_shape": (16, 16, 2)}
    with pytest.raises(TransferError, match="cannot adapt 2-channel images"):
        evaluate_transfer(workdir, "synthetic", dataset_options=two_channels)
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes(b"")  # an unlabelled (flat) folder
    with pytest.raises(TransferError, match="has no class labels"):
        evaluate_transfer(workdir, "image_folder", dataset_options={"root": str(flat)})
