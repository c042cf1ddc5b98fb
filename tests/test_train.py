"""The training loop: sharded step equals one device, exact resume, no retrace, CLI."""

import glob
import importlib.util
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from conftest import count_compiles, make_tiny_config
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags

from jaxcl import configs, data, load_encoder
from jaxcl.config import ConfigError, validate_config
from jaxcl.methods import MethodSettingError, get_method
from jaxcl.metric_writer import read_metrics
from jaxcl.models import functional
from jaxcl.restore import restore_run
from jaxcl.run import train_and_evaluate
from jaxcl.train import Trainer
from jaxcl.trained_encoder import EncoderInputError

CONFIG_FILES = [configs.path(name) for name in configs.NAMES]


def tiny_config(method_name="simclr", **overrides):
    return make_tiny_config(method_name, **overrides)


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
    """Runs ``steps`` train steps on ``batch``; returns (trainer, state, losses, compiles)."""
    trainer = Trainer(config, mesh)
    state = trainer.initial_state()
    sharding = NamedSharding(mesh, P("data"))
    placed = {k: jax.device_put(v, sharding) for k, v in batch.items()}
    losses = []
    with jax.set_mesh(mesh), count_compiles("_train_step") as compiles:
        for _ in range(steps):
            state, metrics = trainer.train_step(state, placed)
            losses.append(float(metrics["loss"]))
    return trainer, jax.device_get(state), losses, compiles.count


VIT_MOCOV3 = {
    "model": "vit_tiny",
    "model_options": {
        "width": 32, "depth": 2, "num_heads": 2, "patch_size": 4, "frozen_patch_embedding": True,
    },
    "optimizer": "adamw",
    "learning_rate": 1e-3,
    "weight_decay": 0.1,
    "projection_layers": 3,
}  # fmt: skip


@pytest.mark.parametrize("method", ["simclr", "mocov2", "mocov3", "supcon", "mocov3_vit"])
def test_eight_devices_equal_one_device(mesh, method):
    """Global BN + gathered negatives on 8 devices == the whole batch on 1 device.

    'mocov3_vit' is MoCo v3's ViT recipe at small size: a ViT with a frozen patch
    projection, AdamW and the 3-layer projector.
    """
    vit = method == "mocov3_vit"
    config = tiny_config("mocov3", **VIT_MOCOV3) if vit else tiny_config(method)
    # Adam steps each parameter by about lr * sign(gradient). Where the gradient
    # is zero by an invariance (the final LayerNorm's bias before the
    # projector's BatchNorm, the key bias of attention) its float noise picks
    # the sign, so parameters agree only to the steps' size; the gradients of
    # the first step, in Adam's moments, are compared tightly instead.
    adam = config.optimizer == "adamw"
    atol = 2 * 2 * config.learning_rate * config.global_batch_size / 256 if adam else 1e-5
    batch = _first_batch(config)
    one_device = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    _, state_one, losses_one, _ = _run_steps(config, one_device, batch)
    _, state_eight, losses_eight, compiles = _run_steps(config, mesh, batch)
    np.testing.assert_allclose(losses_eight, losses_one, rtol=1e-5, atol=1e-5)
    for name in ("params", "batch_stats", "momentum_params", "extras"):
        if name not in state_one:
            continue
        leaves_one = jax.tree.leaves(state_one[name])
        leaves_eight = jax.tree.leaves(state_eight[name])
        assert len(leaves_one) == len(leaves_eight) > 0
        for a, b in zip(leaves_eight, leaves_one, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol, err_msg=name)
    if adam:
        # One step: Adam's moments are then (1 - b1) g and (1 - b2) g^2. At
        # initialisation a ViT's class tokens differ little between images, so
        # the projector's BatchNorm divides by a small deviation and magnifies
        # the rounding of the sums' order: gradients agree to 1e-3 of their scale.
        _, state_one, _, _ = _run_steps(config, one_device, batch, steps=1)
        _, state_eight, _, _ = _run_steps(config, mesh, batch, steps=1)
        first_moments = [
            np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(state["opt_state"][0].mu)])
            for state in (state_eight, state_one)
        ]
        scale = np.abs(first_moments[1]).max()
        assert scale > 0
        np.testing.assert_allclose(*first_moments, rtol=1e-3, atol=1e-3 * scale)
    assert compiles == 1, "the step compiled more than once"


def test_training_decreases_loss_and_does_not_retrace(mesh):
    config = tiny_config("simclr", learning_rate=1.0)
    batch = _first_batch(config)
    _, _, losses, compiles = _run_steps(config, mesh, batch, steps=6)
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses
    assert compiles == 1


def test_mocov2_queue_holds_the_gathered_momentum_keys_in_order(mesh):
    """After 3 steps of 16 keys into a queue of 40: rows [0, 8) hold step 3's last
    8 keys (wrapped around), [8, 16) step 1's last 8 (its first 8 overwritten),
    [16, 32) step 2's and [32, 40) step 3's first 8, in global-batch order."""
    config = tiny_config("mocov2")
    batch = _first_batch(config)
    trainer = Trainer(config, mesh)
    state = trainer.initial_state()
    placed = {k: jax.device_put(v, NamedSharding(mesh, P("data"))) for k, v in batch.items()}
    # The momentum keys of one step, computed on one device: its BatchNorm
    # normalises over every view of the global batch, as the sharded step does.
    one_device = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    replicated = NamedSharding(one_device, P())
    project = jax.jit(
        jax.shard_map(
            lambda p, s, x: functional.apply(trainer.momentum_graphdef, p, s, x, train=True)[0][
                "projections"
            ],
            mesh=one_device,
            in_specs=(P(), P(), P()),
            out_specs=P(),
        )
    )
    all_views = np.concatenate([batch["views"][:, 0], batch["views"][:, 1]])
    expected = []
    for _ in range(3):
        host = jax.device_get(state)
        with jax.set_mesh(one_device):
            projections = project(
                *jax.device_put(
                    (host["momentum_params"], host["momentum_batch_stats"], all_views), replicated
                )
            )
        keys = np.asarray(projections, np.float64)[len(batch["views"]) :]
        expected.append(keys / np.linalg.norm(keys, axis=1, keepdims=True))
        with jax.set_mesh(mesh):
            state, _ = trainer.train_step(state, placed)
    queue = np.asarray(jax.device_get(state["extras"]["queue"]))
    assert int(state["extras"]["queue_position"]) == (3 * 16) % 40
    np.testing.assert_allclose(queue[0:8], expected[2][8:], atol=2e-5)
    np.testing.assert_allclose(queue[8:16], expected[0][8:], atol=2e-5)
    np.testing.assert_allclose(queue[16:32], expected[1], atol=2e-5)
    np.testing.assert_allclose(queue[32:40], expected[2][:8], atol=2e-5)


def _params(workdir):
    run = restore_run(workdir)
    return run.step, jax.device_get(run.state)


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
    # load_encoder gives the restored encoder's features in evaluation mode.
    images = jax.random.uniform(jax.random.key(1), (3, 16, 16, 1))
    features = np.asarray(load_encoder(workdir)(images))
    run = restore_run(workdir)
    encoder = functional.merge(run.trainer.graphdef, run.state["params"], run.state["batch_stats"])
    expected, _ = functional.apply(*functional.split(encoder.encoder), images, train=False)
    assert features.shape == (3, 16) and features.dtype == np.float32
    np.testing.assert_allclose(features, np.asarray(expected), rtol=1e-5, atol=1e-6)
    fresh = Trainer(run.config)
    untrained = fresh.feature_fn(fresh.encoder_variables(fresh.initial_state()), images)
    assert not np.allclose(features, np.asarray(untrained), atol=1e-3)
    # 0-255 pixels would give features tens of times too large: refused, or
    # scaled when asked; images without the batch axis or channels are refused.
    pixels = np.round(np.asarray(images) * 255).astype(np.uint8)
    with pytest.raises(EncoderInputError, match=r"dtype uint8.*images / 255\.0"):
        load_encoder(workdir)(pixels)
    scaled = np.asarray(load_encoder(workdir, scale_uint8=True)(pixels))
    np.testing.assert_allclose(
        scaled, np.asarray(load_encoder(workdir)(pixels / np.float32(255))), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(EncoderInputError, match=r"shape \(16, 16, 1\).*images\[None\]"):
        load_encoder(workdir)(images[0])
    with pytest.raises(EncoderInputError, match=r"shape \(3, 16, 16, 3\)"):
        load_encoder(workdir)(jnp.tile(images, (1, 1, 1, 3)))


@pytest.mark.parametrize(
    ("key", "value", "error_type"),
    [
        ("global_batch_size", 12, ConfigError),
        ("mocov2.temperature", 0.0, MethodSettingError),
        ("method", "byol2", ConfigError),
        ("model", "resnet9", ConfigError),
        ("model", "linear_classifier", ConfigError),
        ("dataset", "no_such_dataset", ConfigError),
        ("mocov2.queue_size", 8, MethodSettingError),
        ("mocov2.momentum_encoder_decay", 1.0, MethodSettingError),
    ],
)
def test_bad_config_raises_one_line_error(key, value, error_type):
    config = tiny_config("mocov2", **{key: value})
    with pytest.raises(error_type) as error:
        validate_config(config, num_devices=8)
    assert error.value.key == key and error.value.value == value
    assert f"config.{key}={value!r}" in str(error.value) and "\n" not in str(error.value)


def _load_config_file(path, arg=""):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.mark.parametrize("config_file", CONFIG_FILES, ids=os.path.basename)
def test_every_shipped_recipe_validates_unmodified(config_file, monkeypatch):
    """The full recipes (not their smoke variants): no data is read."""
    config = _load_config_file(config_file)
    if config.dataset == "imagenet2012":  # cannot be downloaded: pretend it is prepared
        monkeypatch.setattr(data, "is_prepared", lambda *args: True, raising=False)
    method = get_method(config.method)
    assert set(config[method.name]) == set(method.defaults())
    validate_config(config, num_devices=8)


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
        [
            f"--config={config_file}",
            "--config.simclr.temperature=0.5",
            "--config.eval.linear_epochs=3",
        ]
    )
    assert config.simclr.temperature == 0.5 and config.eval.linear_epochs == 3
    with pytest.raises(Exception, match="temprature"):
        _parse_config_flags([f"--config={config_file}", "--config.simclr.temprature=0.5"])


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
