"""Semi-supervised fine-tuning (jaxcl.finetuning, python -m jaxcl.finetune).

The smoke recipe fine-tunes smoke pretraining runs of three methods: the
pretrained parts arrive intact, 8 devices equal 1 device, a killed CLI run
resumes to the parameters of an uninterrupted one, and bad recipes fail in
one line.
"""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcl import configs, finetuning
from jaxcl.checkpoint import Checkpointer
from jaxcl.config import ConfigError
from jaxcl.configs.finetune import simclr_fashion_mnist as finetune_recipe
from jaxcl.restore import restore_run
from jaxcl.run import train_and_evaluate
from jaxcl.train import train_batches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPE_FILE = os.path.join(ROOT, "configs", "finetune", "simclr_fashion_mnist.py")


def _recipe(**changes):
    recipe = finetune_recipe.get_config("smoke")
    for key, value in changes.items():
        recipe[key] = value
    return recipe


def _pretrain(workdir, name):
    config = configs.get_config(name, "smoke")
    config.eval.run_at_end = False
    train_and_evaluate(config, str(workdir))
    return str(workdir)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """Smoke pretraining runs of SimCLR, MoCo v2 and SupCon, by recipe name."""
    names = ("simclr_fashion_mnist", "mocov2_imagenet", "supcon_cifar10")
    return {name: _pretrain(tmp_path_factory.mktemp(name), name) for name in names}


def _steps(tuner, steps):
    """``steps`` fine-tuning steps from the initial state; (state, losses) on the host."""
    state = tuner.initial_state()
    batches = train_batches(tuner)
    losses = []
    try:
        with jax.set_mesh(tuner.mesh):
            for _ in range(steps):
                state, metrics = tuner.train_step(state, next(batches))
                losses.append(float(metrics["loss"]))
    finally:
        batches.close()
    return jax.device_get(state), losses


def test_pretrained_parts_are_loaded_and_the_classifier_starts_at_zero(pretrained):
    workdir = pretrained["simclr_fashion_mnist"]
    saved = jax.device_get(restore_run(workdir).state)
    config = finetuning.finetune_run_config(_recipe(from_projection_layer=1), workdir)
    state = jax.device_get(finetuning.FineTuner(config).initial_state())
    for part in ("encoder", "projector"):
        for a, b in zip(
            jax.tree.leaves(state["params"][part]),
            jax.tree.leaves(saved["params"][part]),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        jax.tree.leaves(state["batch_stats"]["encoder"])[0],
        jax.tree.leaves(saved["batch_stats"]["encoder"])[0],
    )
    kernel = state["params"]["classifier"]["kernel"]
    # On the first hidden layer of the head (32 wide in the smoke config), not the features.
    assert kernel.shape == (32, 10) and not kernel.any()

    scratch = finetuning.finetune_run_config(_recipe())
    scratch_state = jax.device_get(finetuning.FineTuner(scratch).initial_state())
    assert "projector" not in scratch_state["params"]
    first = jax.tree.leaves(scratch_state["params"]["encoder"])[0]
    assert not np.array_equal(first, jax.tree.leaves(saved["params"]["encoder"])[0])


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, head_layers",
    [("simclr_fashion_mnist", 1), ("mocov2_imagenet", 0), ("supcon_cifar10", 0)],
)
def test_eight_devices_equal_one_device_for_every_method(pretrained, mesh, name, head_layers):
    recipe = _recipe(from_projection_layer=head_layers)
    config = finetuning.finetune_run_config(recipe, pretrained[name])
    one_device = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    state_one, losses_one = _steps(finetuning.FineTuner(config, one_device), 3)
    state_eight, losses_eight = _steps(finetuning.FineTuner(config, mesh), 3)
    np.testing.assert_allclose(losses_eight, losses_one, rtol=1e-5, atol=1e-5)
    assert losses_one[-1] != losses_one[0]  # the steps trained something
    for key in ("params", "batch_stats"):
        for a, b in zip(
            jax.tree.leaves(state_eight[key]), jax.tree.leaves(state_one[key]), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=key)


@pytest.mark.slow
def test_vit_drop_path_is_the_same_on_eight_devices_and_one(mesh):
    # Drops are drawn per example from (seed, step, dataset index).
    recipe = _recipe(base_config="mocov3_vit_fashion_mnist:smoke", drop_path_rate=0.3)
    config = finetuning.finetune_run_config(recipe, "")
    assert config.model_options["drop_path_rate"] == 0.3
    one_device = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
    state_one, losses_one = _steps(finetuning.FineTuner(config, one_device), 3)
    state_eight, losses_eight = _steps(finetuning.FineTuner(config, mesh), 3)
    np.testing.assert_allclose(losses_eight, losses_one, rtol=1e-5, atol=1e-5)
    for a, b in zip(
        jax.tree.leaves(state_eight["params"]), jax.tree.leaves(state_one["params"]), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    recipe.drop_path_rate = 0.0
    _, losses_plain = _steps(finetuning.FineTuner(finetuning.finetune_run_config(recipe, "")), 3)
    assert losses_plain[0] == pytest.approx(losses_one[0], rel=1e-6)  # zero-init head
    assert abs(losses_plain[-1] - losses_one[-1]) > 1e-4  # the drops changed the updates


def test_training_reads_only_the_class_balanced_subset():
    tuner = finetuning.FineTuner(finetuning.finetune_run_config(_recipe(labels_per_class=3)))
    assert len(tuner.subset) == 30 and tuner.steps_per_epoch == 1
    iterator = tuner.data.train_iterator()
    seen = np.concatenate([next(iterator)["index"] for _ in range(4)])
    assert set(seen.tolist()) <= set(tuner.subset.tolist())
    # Smoke data: example i has label i % 10, so 3 of each class.
    assert np.bincount(tuner.subset % 10).tolist() == [3] * 10
    batch = next(iterator)
    assert batch["views"].shape == (16, 1, 16, 16, 1)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"label_fraction": 0.0}, "config.label_fraction=0.0 is out of range"),
        ({"optimizer": "adam"}, "config.optimizer='adam' is out of range"),
        ({"global_batch_size": 128}, "exceeds the 60 examples of the labelled subset"),
        ({"from_projection_layer": 3}, "needs a projection head of more than 3 layers"),
        ({"base_config": ""}, "names no network to train from scratch"),
        ({"drop_path_rate": 0.1}, "drop_path_rate=0.1 is a ViT's option"),
        ({"drop_path_rate": 1.0}, "drop_path_rate=1.0 is out of range"),
    ],
)
def test_bad_recipes_fail_in_one_line_before_training(changes, expected):
    with pytest.raises(ConfigError, match=expected) as error:
        finetuning.FineTuner(finetuning.finetune_run_config(_recipe(**changes)))
    assert "\n" not in str(error.value)


def _logged_steps(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    steps = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as file:
            for line in file:
                try:
                    steps.append(json.loads(line)["step"])
                except json.JSONDecodeError:
                    break  # the line being written
    return steps


# absl's format (I1206 03:50:16.931467 ... file.py:849]) and Python's default (INFO:name:).
LIBRARY_INFO_LINE = re.compile(r"^(I\d{4} \d\d:\d\d:\d\d\.\d+ |INFO:)", re.MULTILINE)


def _tail(path):
    with open(path, encoding="utf-8") as file:
        return file.read()[-3000:]


def _cli(workdir, pretrained_workdir, log):
    command = [sys.executable, "-m", "jaxcl.finetune", f"--config={RECIPE_FILE}:smoke"]
    command += [f"--pretrained={pretrained_workdir}", f"--workdir={workdir}"]
    command += ["--config.num_steps=40", "--config.checkpoint_every_steps=4"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _final_state(workdir, recipe, pretrained_workdir):
    tuner = finetuning.FineTuner(finetuning.finetune_run_config(recipe, pretrained_workdir))
    checkpointer = Checkpointer(workdir)
    try:
        step, state = checkpointer.restore(tuner.abstract_state())
    finally:
        checkpointer.close()
    return step, jax.device_get(state)


@pytest.mark.slow
def test_killed_cli_run_resumes_to_the_uninterrupted_parameters(pretrained, tmp_path):
    source = pretrained["simclr_fashion_mnist"]
    recipe = _recipe(num_steps=40, checkpoint_every_steps=4)
    reference = str(tmp_path / "reference")
    finetuning.finetune_and_evaluate(recipe, reference, pretrained=source)

    workdir = str(tmp_path / "killed")
    with open(f"{workdir}.log", "w", encoding="utf-8") as log:
        process = _cli(workdir, source, log)
        deadline = time.monotonic() + 300
        while not (
            _logged_steps(workdir)
            and _logged_steps(workdir)[-1] >= 10
            and os.path.isdir(os.path.join(workdir, "checkpoints", "8"))
        ):
            assert process.poll() is None, _tail(f"{workdir}.log")
            assert time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
        assert _logged_steps(workdir)[-1] < 40, "the run finished before the kill"
        assert not os.path.exists(os.path.join(workdir, "results.json"))
        rerun = _cli(workdir, source, log)
        assert rerun.wait(timeout=300) == 0, _tail(f"{workdir}.log")

    step, state = _final_state(workdir, recipe, source)
    reference_step, reference_state = _final_state(reference, recipe, source)
    assert step == reference_step == 40
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(reference_state), strict=True):
        np.testing.assert_array_equal(a, b)
    with open(os.path.join(workdir, "results.json"), encoding="utf-8") as file:
        results = json.load(file)
    with open(os.path.join(reference, "results.json"), encoding="utf-8") as file:
        expected = json.load(file)
    assert results["finetune_top1"] == expected["finetune_top1"]
    assert results["label_fraction"] == pytest.approx(60 / 256)
    assert results["pretrained"] == source and results["steps"] == 40
    # The screen (the CLI's output) has no library INFO line; the log file has them.
    screen = pathlib.Path(f"{workdir}.log").read_text(encoding="utf-8")
    assert "fine-tuned (" in screen and not LIBRARY_INFO_LINE.search(screen), screen[-3000:]
    with open(os.path.join(workdir, "log.txt"), encoding="utf-8") as file:
        assert "checkpoint" in file.read().lower()


def test_the_test_split_score_is_the_accuracy_of_the_logits(pretrained):
    """``test_top1`` is the plain accuracy of argmax logits over the whole test split."""
    config = finetuning.finetune_run_config(_recipe(), pretrained["simclr_fashion_mnist"])
    tuner = finetuning.FineTuner(config)
    state = tuner.initial_state()
    images, labels = tuner.eval_spec.eval_arrays(tuner.eval_spec.eval_test_split)
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    # Perturb the zero classifier so that the logits are informative.
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=variables["params"]["classifier"]["kernel"].shape).astype(np.float32)
    variables["params"]["classifier"]["kernel"] = jax.device_put(
        kernel, NamedSharding(tuner.mesh, P())
    )
    state = {**state, "params": variables["params"]}
    with jax.set_mesh(tuner.mesh):
        logits = np.asarray(tuner.logits_fn(variables, images))
    expected = float(np.mean(np.argmax(logits, axis=1) == labels))
    assert len(labels) == 128
    assert tuner.test_top1(state) == pytest.approx(expected)
