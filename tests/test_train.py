"""The training loop: sharded step equals one device, exact resume, no retrace, CLI."""

import glob
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags

from jaxcl import data
from jaxcl.checkpoint import Checkpointer
from jaxcl.config import default_config
from jaxcl.train import Trainer, train_and_evaluate, validate_config

CONFIG_FILES = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "*.py")))


def tiny_config(method="simclr", **overrides):
    """A tiny synthetic-data config for a few steps."""
    config = default_config()
    config.method = method
    config.model = "resnet_tiny"
    config.dataset = "synthetic"
    config.dataset_options = {
        "image_shape": (16, 16, 1),
        "num_classes": 4,
        "num_examples": {"train": 64, "test": 32},
    }
    config.image_size = 16
    config.augmentation = "fashion_mnist"
    config.global_batch_size = 16
    config.num_steps = 4
    config.warmup_epochs = 0.0
    config.learning_rate = 0.5
    config.projection_dim = 8
    config.predictor_hidden_dim = 16
    config.queue_size = 40  # not a multiple of the batch: the ring buffer wraps
    config.log_every_steps = 1
    config.checkpoint_every_steps = 2
    config.max_checkpoints_to_keep = 5
    config.progress_bar = False
    config.eval.run_at_end = False
    for key, value in overrides.items():
        config[key] = value
    return config


def _first_batch(config):
    iterator = data.make_train_iterator(
        config.dataset,
        preset=config.augmentation,
        global_batch_size=config.global_batch_size,
        image_size=config.image_size,
        num_views=config.num_views,
        seed=config.seed,
        process_index=0,
        process_count=1,
        dataset_options=dict(config.dataset_options),
    )
    batch = next(iterator)
    return {"views": batch["views"], "label": batch["label"]}


def _run_steps(config, mesh, batch, steps=2):
    trainer = Trainer(config, mesh)
    state = trainer.initial_state()
    sharding = NamedSharding(mesh, P("data"))
    placed = {k: jax.device_put(v, sharding) for k, v in batch.items()}
    losses = []
    with jax.set_mesh(mesh):
        for _ in range(steps):
            state, metrics = trainer.train_step(state, placed)
            losses.append(float(metrics["loss"]))
    return trainer, jax.device_get(state), losses


@pytest.mark.parametrize("method", ["simclr", "mocov2", "mocov3", "supcon"])
def test_eight_devices_equal_one_device(mesh, method):
    """Global BN + gathered negatives on 8 devices == the whole batch on 1 device."""
    config = tiny_config(method)
    batch = _first_batch(config)
    one_device = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    _, state_one, losses_one = _run_steps(config, one_device, batch)
    trainer, state_eight, losses_eight = _run_steps(config, mesh, batch)
    np.testing.assert_allclose(losses_eight, losses_one, rtol=1e-5, atol=1e-5)
    for name in ("params", "batch_stats", "momentum_params", "extras"):
        if name not in state_one:
            continue
        leaves_one = jax.tree.leaves(state_one[name])
        leaves_eight = jax.tree.leaves(state_eight[name])
        assert len(leaves_one) == len(leaves_eight) > 0
        for a, b in zip(leaves_eight, leaves_one, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)
    assert trainer.trace_count == 1, "the step retraced"


def test_training_decreases_loss_and_does_not_retrace(mesh):
    config = tiny_config("simclr", learning_rate=1.0)
    batch = _first_batch(config)
    trainer, _, losses = _run_steps(config, mesh, batch, steps=6)
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses
    assert trainer.trace_count == 1


def test_mocov2_queue_is_a_ring_buffer(mesh):
    config = tiny_config("mocov2")
    batch = _first_batch(config)
    _, state, _ = _run_steps(config, mesh, batch, steps=3)
    # 3 steps x 16 keys into a queue of 40 wrap around to position 8.
    assert int(state["extras"]["queue_position"]) == (3 * 16) % 40
    norms = np.linalg.norm(state["extras"]["queue"], axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def _params(workdir):
    trainer = Trainer(_saved_config(workdir))
    checkpointer = Checkpointer(workdir)
    step, state = checkpointer.restore(trainer.abstract_state())
    checkpointer.close()
    return step, jax.device_get(state)


def _saved_config(workdir):
    from jaxcl.train import load_config

    return load_config(workdir)


@pytest.mark.parametrize("method", ["simclr", "mocov2"])
def test_resume_is_exact(tmp_path, method):
    """4 steps straight == 2 steps, restart from the checkpoint, 2 more steps."""
    config = tiny_config(method)
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    train_and_evaluate(config, straight)
    train_and_evaluate(config, resumed)
    # Simulate a crash after step 2: drop the later checkpoint and run again.
    shutil.rmtree(os.path.join(resumed, "checkpoints", "4"))
    train_and_evaluate(config, resumed)
    step_a, state_a = _params(straight)
    step_b, state_b = _params(resumed)
    assert step_a == step_b == 4
    for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b), strict=True):
        np.testing.assert_array_equal(a, b)
    # Steps 3 and 4 were logged twice; TensorBoard shows each once, the rerun's value.
    assert _tensorboard_steps(resumed, "loss") == [1, 2, 3, 4]


def _tensorboard_steps(workdir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(workdir, "tensorboard"))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def test_metrics_and_load_encoder(tmp_path):
    from jaxcl import load_encoder
    from jaxcl.metrics import read_metrics

    workdir = str(tmp_path / "run")
    config = tiny_config("simclr")
    config.eval.run_at_end = True
    config.eval.linear_epochs = 2
    results = train_and_evaluate(config, workdir)
    records = read_metrics(workdir)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for key in ("loss", "images_per_sec", "learning_rate", "grad_norm", "alignment"):
        assert key in records[-1]
    assert 0.0 <= results["linear_top1"] <= 1.0
    assert os.path.exists(os.path.join(workdir, "results.json"))
    assert glob.glob(os.path.join(workdir, "tensorboard", "events.*"))
    assert _tensorboard_steps(workdir, "loss") == [1, 2, 3, 4]
    for plot in ("training_curves", "embedding_pca", "augmentations"):
        assert os.path.getsize(os.path.join(workdir, "plots", f"{plot}.png")) > 1000, plot
    encode = load_encoder(workdir)
    features = encode(jnp.zeros((3, 16, 16, 1)))
    assert features.shape == (3, 16) and features.dtype == jnp.float32


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("global_batch_size", 12, "multiple of the 8 devices"),
        ("temperature", 0.0, "temperature=0.0 must be > 0"),
        ("method", "byol2", "method='byol2' is unknown"),
        ("model", "resnet9", "model='resnet9' is unknown"),
        ("dataset", "mnist", "dataset='mnist' is unknown"),
        ("queue_size", 8, "queue_size=8 is smaller"),
    ],
)
def test_bad_config_raises_one_line_error(key, value, message):
    config = tiny_config("mocov2")
    config[key] = value
    with pytest.raises(ValueError, match=message) as error:
        validate_config(config, num_devices=8)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("config_file", CONFIG_FILES, ids=os.path.basename)
def test_config_smoke_variant(tmp_path, config_file):
    """Every config's ':smoke' variant trains a few finite steps."""
    config = _parse_config_flags(
        [f"--config={config_file}:smoke", "--config.eval.run_at_end=False"]
    )
    assert config.num_steps <= 10
    results = train_and_evaluate(config, str(tmp_path / "run"))
    assert np.isfinite(results["loss"])


def _parse_config_flags(arguments):
    """Parses command-line style config flags as ``jaxcl.main`` does."""
    argv = ["jaxcl.main", *arguments]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", flag_values=flag_values, lock_config=True, sys_argv=argv
    )
    flag_values(argv)
    return flag_values.config


def test_cli_overrides_and_unknown_keys():
    config_file = os.path.join(
        os.path.dirname(__file__), "..", "configs", "simclr_fashion_mnist.py"
    )
    config = _parse_config_flags(
        [f"--config={config_file}", "--config.temperature=0.5", "--config.eval.linear_epochs=3"]
    )
    assert config.temperature == 0.5 and config.eval.linear_epochs == 3
    with pytest.raises(Exception, match="temprature"):
        _parse_config_flags([f"--config={config_file}", "--config.temprature=0.5"])


def test_loop_reads_the_device_only_at_log_and_checkpoint_steps(tmp_path, monkeypatch):
    """No host synchronisation per step.

    Under ``transfer_guard_device_to_host('disallow')`` any implicit copy to the
    host (``float(loss)``, ``if finite:``) raises; explicit reads are counted,
    and four more steps in the same log window add none.
    """
    reads = []
    device_get = jax.device_get

    def counting_device_get(tree):
        reads.append(jax.tree.structure(tree))
        return device_get(tree)

    monkeypatch.setattr(jax, "device_get", counting_device_get)
    counts = {}
    for steps in (4, 8):
        reads.clear()
        config = tiny_config(num_steps=steps, log_every_steps=8, checkpoint_every_steps=100)
        with jax.transfer_guard_device_to_host("disallow"):
            train_and_evaluate(config, str(tmp_path / f"steps{steps}"))
        counts[steps] = len(reads)
    assert counts[4] == counts[8] > 0, counts
