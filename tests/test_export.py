"""A portable encoder: load_encoder without the dataset, and the jax.export artifact."""

import json
import shutil

import jax
import numpy as np
import pytest
from conftest import make_tiny_config

from jaxcl import load_encoder
from jaxcl.config import ConfigError
from jaxcl.restore import restore_run
from jaxcl.run import train_and_evaluate
from jaxcl.trained_encoder import export_encoder, load_exported_encoder


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    """A tiny run with Fashion-MNIST's shapes (10 classes, one channel), 2 steps."""
    workdir = str(tmp_path_factory.mktemp("run"))
    config = make_tiny_config(num_steps=2, **{"dataset_options.num_classes": 10})
    train_and_evaluate(config, workdir)
    return workdir


def test_load_encoder_needs_no_dataset(trained_workdir, tmp_path):
    images = jax.random.uniform(jax.random.key(0), (4, 16, 16, 1))
    expected = np.asarray(load_encoder(trained_workdir)(images))
    # The same run as if trained on a Fashion-MNIST copy that this machine lacks.
    moved = tmp_path / "moved"
    shutil.copytree(trained_workdir, moved)
    config = json.loads((moved / "config.json").read_text())
    config["dataset"] = "fashion_mnist"
    config["dataset_options"] = {"source_dir": str(tmp_path / "not_here")}
    (moved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError) as error:
        restore_run(str(moved))  # evaluation needs the data, and says so
    assert error.value.key == "dataset_options.source_dir"
    np.testing.assert_allclose(np.asarray(load_encoder(str(moved))(images)), expected, rtol=1e-6)


def test_exported_encoder_reproduces_load_encoder(trained_workdir, tmp_path):
    out = str(tmp_path / "encoder.bin")
    exported = export_encoder(trained_workdir, out)
    assert str(exported.in_avals[0].shape[0]) == "batch"  # batch-polymorphic
    encode = load_encoder(trained_workdir)
    # JAX alone: deserialize and call.
    with open(out, "rb") as f:
        portable = jax.export.deserialize(bytearray(f.read()))
    for batch in (1, 5):
        images = jax.random.uniform(jax.random.key(batch), (batch, 16, 16, 1))
        expected = np.asarray(encode(images))
        np.testing.assert_allclose(
            np.asarray(portable.call(images)), expected, rtol=1e-5, atol=1e-6
        )
        loaded = load_exported_encoder(out)(images)
        np.testing.assert_allclose(np.asarray(loaded), expected, rtol=1e-5, atol=1e-6)
