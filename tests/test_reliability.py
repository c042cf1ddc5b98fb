"""Faults: signals, killed runs, damaged checkpoints, bad configs and inputs, NaNs.

The end-to-end tests train the ':smoke' variant of the Fashion-MNIST config (a
tiny encoder on synthetic images) for 24 steps, the killed and signalled runs
in subprocesses started as a user would (``python -m jaxcl.main``), and compare
their final train state bit for bit with one uninterrupted run in this process.
The subprocesses share a persistent compilation cache, so only the first one
compiles the step.
"""

import dataclasses
import glob
import importlib.util
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags

from jaxcl import losses
from jaxcl.checkpoint import Checkpointer, UnreadableCheckpointError
from jaxcl.config import ConfigError, validate_config
from jaxcl.data import augment
from jaxcl.data._tf import tf
from jaxcl.methods import registry
from jaxcl.metric_writer import read_metrics
from jaxcl.restore import restore_run
from jaxcl.run import train_and_evaluate
from jaxcl.stopping import NonFiniteLossError, NonfiniteMonitor, StopRequested
from jaxcl.train import Trainer
from jaxcl.workdir_identity import WorkdirMismatchError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILE = os.path.join(ROOT, "configs", "simclr_fashion_mnist.py")
NUM_STEPS = 24
# Logging every step lets the tests see where a run is; checkpoints every 4.
OVERRIDES = {
    "num_steps": NUM_STEPS,
    "checkpoint_every_steps": 4,
    "log_every_steps": 1,
    "max_checkpoints_to_keep": 2,
    "eval.run_at_end": False,
}


def _load_config_file(path, arg=""):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def _smoke_config(**changes):
    """The config of ``python -m jaxcl.main --config=...:smoke`` with OVERRIDES."""
    config = _load_config_file(CONFIG_FILE, "smoke")
    for key, value in {**OVERRIDES, **changes}.items():
        *parents, leaf = key.split(".")
        target = config
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


def _final_state(workdir):
    """``(step, state)`` of the newest checkpoint of a run, on the host."""
    run = restore_run(workdir)
    return run.step, jax.device_get(run.state)


def _assert_same_state(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(a, b)


def _logged_steps(workdir):
    """Steps in metrics.jsonl; tolerates the line a running process is writing."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    steps = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                steps.append(json.loads(line)["step"])
            except json.JSONDecodeError:
                break
    return steps


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted run: its workdir (checkpoints of steps 20 and 24)."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    train_and_evaluate(_smoke_config(), workdir)
    return workdir


@pytest.fixture(scope="module")
def reference(reference_run):
    """The final state of the uninterrupted run."""
    step, state = _final_state(reference_run)
    assert step == NUM_STEPS
    return state


@pytest.fixture(scope="module")
def subprocess_env(tmp_path_factory):
    env = dict(os.environ)  # with conftest's 8 CPU devices: the same mesh as here
    env.update(
        JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return env


class _Run:
    """``python -m jaxcl.main`` training the smoke config in a subprocess."""

    def __init__(self, workdir, env):
        self.workdir = workdir
        self.log_path = f"{workdir}.log"
        command = [sys.executable, "-m", "jaxcl.main", f"--config={CONFIG_FILE}:smoke"]
        command.append(f"--workdir={workdir}")
        command.extend(f"--config.{key}={value}" for key, value in OVERRIDES.items())
        with open(self.log_path, "a", encoding="utf-8") as log:
            self.process = subprocess.Popen(
                command,
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self):
        with open(self.log_path, encoding="utf-8") as f:
            return f.read()

    def wait_for_step(self, step, checkpoint=None, timeout=300):
        """Blocks until metrics.jsonl shows ``step`` and ``checkpoint`` is complete."""
        deadline = time.monotonic() + timeout
        complete = os.path.join(self.workdir, "checkpoints", str(checkpoint))
        while time.monotonic() < deadline:
            steps = _logged_steps(self.workdir)
            # orbax renames a checkpoint's directory to its step once it is complete.
            if steps and steps[-1] >= step and (checkpoint is None or os.path.isdir(complete)):
                return steps[-1]
            if self.process.poll() is not None:
                pytest.fail(f"exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.01)
        self.process.kill()
        pytest.fail(f"no step {step} after {timeout} s:\n{self.log()[-3000:]}")

    def wait(self, timeout=300):
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"still running after {timeout} s:\n{self.log()[-3000:]}")


# ------------------------------------------------------------------ signals


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_to_identical_parameters(tmp_path, reference, subprocess_env):
    """SIGKILL between checkpoints loses only the steps since the last one."""
    workdir = str(tmp_path / "run")
    run = _Run(workdir, subprocess_env)
    # Step 6 lies between the checkpoints of steps 4 and 8 (saved in the
    # background: wait until 4 is complete). The kill lands a little later,
    # wherever the run is by then, possibly in the middle of saving step 8.
    run.wait_for_step(6, checkpoint=4)
    run.process.send_signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL
    killed_at = _logged_steps(workdir)[-1]
    assert killed_at < NUM_STEPS, "the run finished before the kill: nothing was tested"
    reader = Checkpointer(workdir)
    saved = reader.all_steps()
    reader.close()
    assert saved and max(saved) <= killed_at

    rerun = _Run(workdir, subprocess_env)
    assert rerun.wait() == 0, rerun.log()[-3000:]
    assert f"resuming from checkpoint at step {max(saved)}" in rerun.log()
    step, state = _final_state(workdir)
    assert step == NUM_STEPS
    _assert_same_state(state, reference)
    # The steps logged after the checkpoint and redone are not duplicated.
    assert _logged_steps(workdir) == list(range(1, NUM_STEPS + 1))


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_exits(tmp_path, reference, subprocess_env):
    workdir = str(tmp_path / "run")
    run = _Run(workdir, subprocess_env)
    run.wait_for_step(9)
    run.process.send_signal(signal.SIGTERM)
    assert run.wait() == 128 + signal.SIGTERM, run.log()[-3000:]
    stopped_at = _logged_steps(workdir)[-1]
    assert stopped_at < NUM_STEPS
    assert f"SIGTERM: saved step {stopped_at}, exiting" in run.log()
    # The checkpoint is of the step the signal interrupted, not the last multiple of 4.
    checkpointer = Checkpointer(workdir)
    assert checkpointer.latest_step() == stopped_at
    checkpointer.close()

    train_and_evaluate(_smoke_config(), workdir)  # the same run, resumed in this process
    step, state = _final_state(workdir)
    assert step == NUM_STEPS
    _assert_same_state(state, reference)


def test_stop_requested_flags_signals_and_second_sigint_interrupts():
    # Python's own Ctrl-C handler, whatever earlier tests or libraries installed.
    outer_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        with StopRequested() as stop:
            assert not stop
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)  # repeated SIGTERMs are absorbed
            assert stop and stop.signal_number == signal.SIGTERM
            with pytest.raises(KeyboardInterrupt):  # Ctrl-C after a signal: stop now
                os.kill(os.getpid(), signal.SIGINT)
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == previous
    finally:
        signal.signal(signal.SIGINT, outer_sigint)


# -------------------------------------------------------------- checkpoints


# The checkpoint tests work on copies of the reference run, whose newest
# checkpoints are those of steps 20 and 24.
LATEST, PREVIOUS, NEXT = NUM_STEPS, NUM_STEPS - 4, NUM_STEPS + 4


@pytest.fixture
def copied_run(tmp_path, reference_run):
    workdir = str(tmp_path / "run")
    shutil.copytree(reference_run, workdir)
    assert sorted(map(int, os.listdir(os.path.join(workdir, "checkpoints")))) == [PREVIOUS, LATEST]
    return workdir


def _truncate_array_files(step_directory):
    files = glob.glob(os.path.join(step_directory, "default", "**", "d", "*"), recursive=True)
    assert files
    for path in files:
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)


def _delete_manifests(step_directory):
    manifests = glob.glob(os.path.join(step_directory, "**", "manifest.ocdbt"), recursive=True)
    assert manifests
    for path in manifests:
        os.remove(path)


def _empty_newer_step(step_directory):
    os.makedirs(os.path.join(os.path.dirname(step_directory), str(NEXT)))


# damage done to the latest checkpoint: (the step restored, the step reported unreadable)
DAMAGE = {
    "truncated_array_files": (_truncate_array_files, PREVIOUS, LATEST),
    "deleted_manifest": (_delete_manifests, PREVIOUS, LATEST),
    "empty_newer_step_directory": (_empty_newer_step, LATEST, NEXT),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_unreadable_latest_checkpoint_is_reported_and_the_previous_used(copied_run, damage, caplog):
    corrupt, expected_step, bad_step = DAMAGE[damage]
    corrupt(os.path.join(copied_run, "checkpoints", str(LATEST)))
    trainer = Trainer(_smoke_config())
    checkpointer = Checkpointer(copied_run)
    with caplog.at_level(logging.WARNING):
        step, state = checkpointer.restore(trainer.abstract_state())
    checkpointer.close()
    assert step == expected_step and int(state["step"]) == expected_step
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"checkpoint {bad_step} in" in w and "unreadable" in w for w in warnings)
    assert all("\n" not in w for w in warnings)
    # Reading never moves or deletes anything.
    assert os.path.isdir(os.path.join(copied_run, "checkpoints", str(bad_step)))


def test_training_resumes_past_a_damaged_checkpoint_and_sets_it_aside(copied_run, reference):
    _truncate_array_files(os.path.join(copied_run, "checkpoints", str(LATEST)))
    train_and_evaluate(_smoke_config(), copied_run)
    # The last 4 steps were redone from the previous checkpoint and saved again;
    # the damaged copy is kept aside.
    assert os.listdir(os.path.join(copied_run, "checkpoints_unreadable")) == [str(LATEST)]
    step, state = _final_state(copied_run)
    assert step == LATEST
    _assert_same_state(state, reference)


def test_unfinished_save_is_ignored_and_cleaned_up(copied_run):
    """A save killed before orbax's final rename leaves a temporary directory."""
    directory = os.path.join(copied_run, "checkpoints")
    partial = os.path.join(directory, f"{NEXT}.orbax-checkpoint-tmp")  # orbax's name
    shutil.copytree(os.path.join(directory, str(LATEST)), partial)
    _truncate_array_files(partial)
    reader = Checkpointer(copied_run)
    assert reader.all_steps() == [PREVIOUS, LATEST]
    assert reader.restore(Trainer(_smoke_config()).abstract_state())[0] == LATEST
    reader.close()
    assert os.path.isdir(partial)  # a reader leaves it: it may be a save in progress
    Checkpointer(copied_run, cleanup_tmp=True).close()  # as training opens it
    assert sorted(map(int, os.listdir(directory))) == [PREVIOUS, LATEST]


def test_checkpoints_of_another_config_raise_instead_of_starting_over(copied_run):
    # Another config is refused by the workdir's identity check first; forced
    # through it with fork=True, the checkpoints still do not restore into it.
    with pytest.raises(WorkdirMismatchError, match=r"projection_dim: \d+ -> 8"):
        train_and_evaluate(_smoke_config(projection_dim=8), copied_run)
    with pytest.raises(UnreadableCheckpointError, match="none of the checkpoints") as error:
        train_and_evaluate(_smoke_config(projection_dim=8), copied_run, fork=True)
    assert "\n" not in str(error.value)
    directory = os.path.join(copied_run, "checkpoints")
    assert sorted(map(int, os.listdir(directory))) == [PREVIOUS, LATEST]


# ---------------------------------------------------------- non-finite loss


def _poison(monkeypatch, bad_step, last_bad_step=None):
    """Makes the loss, and so the gradients, of (1-based) steps ``bad_step`` to
    ``last_bad_step`` (default: ``bad_step``) NaN.

    Through the public extension point: the method registry gets a SimCLR
    whose loss is NaN at those steps.
    """
    simclr = registry.METHODS["simclr"]
    last_bad_step = bad_step if last_bad_step is None else last_bad_step

    def poisoned_loss(embeddings, labels, extras, settings, axis_name, step):
        loss, extras, metrics = simclr.loss(embeddings, labels, extras, settings, axis_name, step)
        done = step + 1  # step counts steps done
        factor = jnp.where((done >= bad_step) & (done <= last_bad_step), jnp.nan, 1.0)
        return loss * factor, extras, metrics

    poisoned = dataclasses.replace(simclr, loss=poisoned_loss)
    monkeypatch.setitem(registry.METHODS, "simclr", poisoned)


def test_nonfinite_loss_raises_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch
):
    _poison(monkeypatch, bad_step=3)
    # Logging at step 5 only: the NaN of step 3 is seen at the checkpoint of step 4.
    config = _smoke_config(num_steps=8, log_every_steps=5, checkpoint_every_steps=2)
    workdir = str(tmp_path / "run")
    with pytest.raises(NonFiniteLossError) as error:
        train_and_evaluate(config, workdir)
    message = str(error.value)
    assert "at step 3 (noticed at step 4)" in message
    assert "kept the last good checkpoint, step 2" in message
    assert "nonfinite_loss='skip'" in message and "\n" not in message
    checkpointer = Checkpointer(workdir)
    assert checkpointer.all_steps() == [2]  # the diverged state of step 4 was not saved
    checkpointer.close()


def test_nonfinite_loss_skip_drops_the_update_and_counts_it(tmp_path, monkeypatch):
    _poison(monkeypatch, bad_step=3)
    config = _smoke_config(
        num_steps=4, nonfinite_loss="skip", checkpoint_every_steps=1, max_checkpoints_to_keep=5
    )
    workdir = str(tmp_path / "run")
    results = train_and_evaluate(config, workdir)
    assert results["skipped_steps"] == 1
    trainer = Trainer(config)
    checkpointer = Checkpointer(workdir)
    states = {s: checkpointer.restore(trainer.abstract_state(), s)[1] for s in (2, 3, 4)}
    checkpointer.close()
    assert int(states[3]["step"]) == 3  # the step counter (and data) moved on
    _assert_same_state(
        {k: v for k, v in states[3].items() if k != "step"},
        {k: v for k, v in states[2].items() if k != "step"},
    )
    chex.assert_tree_all_finite(states[4]["params"])
    changed = jax.tree.map(np.array_equal, states[4]["params"], states[3]["params"])
    assert not all(jax.tree.leaves(changed))  # training went on after the skipped step
    records = {record["step"]: record for record in read_metrics(workdir)}
    assert records[3]["finite"] == 0.0 and records[3]["loss"] == "nan"
    assert records[4]["finite"] == 1.0
    # Extended: the resumed run counts the skip before the resume, and its own;
    # results.json says how many updates the evaluated encoder missed.
    _poison(monkeypatch, bad_step=6)
    config.num_steps, config.checkpoint_every_steps, config.eval.run_at_end = 8, 4, True
    train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f)["skipped_steps"] == 2


def test_nonfinite_loss_skip_stops_a_run_that_diverged_for_good(tmp_path, monkeypatch):
    # From step 3 on every update is NaN: 'skip' would drop them all and report
    # the frozen encoder of step 2 as the run's result.
    _poison(monkeypatch, bad_step=3, last_bad_step=10**6)
    config = _smoke_config(
        num_steps=12, nonfinite_loss="skip", max_consecutive_skips=3, log_every_steps=1,
        checkpoint_every_steps=2, **{"eval.run_at_end": True},
    )  # fmt: skip
    workdir = str(tmp_path / "run")
    with pytest.raises(NonFiniteLossError) as error:
        train_and_evaluate(config, workdir)
    message = str(error.value)
    assert message.startswith("3 updates in a row were non-finite and skipped (the first at step 3")
    assert "noticed at step 5" in message and "\n" not in message
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    checkpointer = Checkpointer(workdir)
    assert checkpointer.latest_step() == 4  # saved before the limit was seen
    checkpointer.close()
    assert [r["skipped_steps"] for r in read_metrics(workdir)] == [0, 0, 1, 2]


# ------------------------------------------------------------- validation


def _with(**changes):
    config = _smoke_config()
    config.unlock()
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        target = config
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


def _without(key):
    config = _smoke_config()
    config.unlock()
    del config[key]
    return config


# case -> (config, the key and the value the error must name)
BAD_CONFIGS = {
    "unknown_key": (lambda: _with(temprature=0.5), "temprature", 0.5),
    "unknown_method_key": (
        lambda: _with(**{"simclr.temprature": 0.5}),
        "simclr.temprature",
        0.5,
    ),
    "unknown_nested_key": (lambda: _with(**{"eval.linear_epoch": 3}), "eval.linear_epoch", 3),
    "missing_key": (lambda: _without("knn_k"), "knn_k", "<missing>"),
    "crop_larger_than_image": (lambda: _with(image_size=32), "image_size", 32),
    "negative_eval_side": (lambda: _with(**{"eval.image_size": -1}), "eval.image_size", -1),
    "bad_augment_option": (
        lambda: _with(augment_options={"crop_scale": (0.0, 1.0)}),
        "augment_options",
        {"crop_scale": (0.0, 1.0)},
    ),
    "unknown_augment_option": (
        lambda: _with(augment_options={"blur": 1.0}),
        "augment_options",
        {"blur": 1.0},
    ),
    "unknown_dataset_option": (
        lambda: _with(dataset_options={"colour": True}),
        "dataset_options",
        {"colour": True},
    ),
    "missing_fashion_mnist_files": (
        lambda: _with(
            dataset="fashion_mnist", image_size=28, dataset_options={"source_dir": "/no/such"}
        ),
        "dataset_options.source_dir",
        "/no/such",
    ),
    "zero_log_interval": (lambda: _with(log_every_steps=0), "log_every_steps", 0),
    "zero_checkpoint_interval": (
        lambda: _with(checkpoint_every_steps=0),
        "checkpoint_every_steps",
        0,
    ),
    "unknown_nonfinite_mode": (lambda: _with(nonfinite_loss="ignore"), "nonfinite_loss", "ignore"),
    "zero_temperature": (lambda: _with(**{"simclr.temperature": 0.0}), "simclr.temperature", 0.0),
    "negative_learning_rate": (lambda: _with(learning_rate=-1.0), "learning_rate", -1.0),
    # Values that used to run to a results.json (issue 16).
    "infinite_temperature": (
        lambda: _with(**{"simclr.temperature": float("inf")}),
        "simclr.temperature",
        float("inf"),
    ),
    "nan_learning_rate": (lambda: _with(learning_rate=float("nan")), "learning_rate", None),
    "negative_num_steps": (lambda: _with(num_steps=-5), "num_steps", -5),
    "negative_batch": (lambda: _with(global_batch_size=-8), "global_batch_size", -8),
    "momentum_of_one": (lambda: _with(momentum=1.0), "momentum", 1.0),
    "negative_weight_decay": (lambda: _with(weight_decay=-1e-4), "weight_decay", -1e-4),
    "negative_warmup": (lambda: _with(warmup_epochs=-1.0), "warmup_epochs", -1.0),
    "zero_knn_temperature": (lambda: _with(knn_temperature=0.0), "knn_temperature", 0.0),
    "zero_probe_epochs": (lambda: _with(**{"eval.linear_epochs": 0}), "eval.linear_epochs", 0),
    "infinite_probe_rate": (
        lambda: _with(**{"eval.linear_learning_rate": float("inf")}),
        "eval.linear_learning_rate",
        float("inf"),
    ),
    "negative_max_examples": (
        lambda: _with(**{"eval.max_train_examples": -1}),
        "eval.max_train_examples",
        -1,
    ),
    "zero_skip_limit": (lambda: _with(max_consecutive_skips=0), "max_consecutive_skips", 0),
    "one_view": (lambda: _with(num_views=1), "num_views", 1),
    "negative_queue": (
        lambda: _with(method="mocov2", **{"mocov2.queue_size": -64}),
        "mocov2.queue_size",
        -64,
    ),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_raises_one_line_error_naming_key_value_and_fix(case):
    make_config, key, value = BAD_CONFIGS[case]
    with pytest.raises(ValueError) as error:
        validate_config(make_config(), num_devices=8)
    assert error.value.key == key
    if value is None:  # NaN: not equal to itself
        assert math.isnan(error.value.value)
    else:
        assert error.value.value == value
    assert str(error.value).startswith(f"config.{key}=") and "; " in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(ConfigError, match=r"did you mean config\.simclr\.temperature\?"):
        validate_config(_with(**{"simclr.temprature": 0.5}), num_devices=8)


def test_missing_imagenet_files_raise_instead_of_crashing(tmp_path):
    config = _load_config_file(os.path.join(ROOT, "configs", "simclr_imagenet.py"))
    config.data_dir = str(tmp_path)
    with pytest.raises(ConfigError) as error:
        validate_config(config, num_devices=8)
    assert (error.value.key, error.value.value) == ("dataset_options.manual_dir", "")


def test_bad_config_fails_before_anything_is_built(tmp_path):
    workdir = str(tmp_path / "run")
    with pytest.raises(ValueError, match="temprature"):
        train_and_evaluate(_with(temprature=0.5), workdir)
    assert not os.path.exists(os.path.join(workdir, "checkpoints"))


def _parse_config_flags(arguments):
    """Parses config flags as ``jaxcl.main`` does (locked config)."""
    argv = ["jaxcl.main", *arguments]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", flag_values=flag_values, lock_config=True, sys_argv=argv
    )
    flag_values(argv)
    return flag_values.config


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        (
            "--config.simclr.temprature=0.5",
            "--config.simclr.temprature=0.5: config key 'temprature' does not exist "
            "(the config is locked); did you mean 'temperature'?",
        ),
        ("--config.eval.linear_epoch=3", "did you mean 'linear_epochs'?"),
        (
            "--config.dataset_options.source_dir=/data/fm",
            """--config.dataset_options.source_dir=/data/fm: dataset_options is set whole, as """
            """JSON: --config.dataset_options='{"source_dir": "/data/fm"}'""",
        ),
        (None, "bad_config.py: config key 'temprature' does not exist"),
    ],
)
def test_unknown_key_in_config_file_or_flag_fails_in_one_line(tmp_path, argument, expected):
    from jaxcl.cli import _config_key_error

    config_file = tmp_path / "bad_config.py"
    config_file.write_text(
        "from jaxcl.config import default_config\n\n\n"
        "def get_config():\n"
        "    config = default_config()\n"
        "    config.temprature = 0.5  # a typo: the locked config refuses it\n"
        "    return config\n"
    )
    if argument is None:
        arguments = [f"--config={config_file}"]
    else:
        arguments = [f"--config={CONFIG_FILE}:smoke", argument]
    with pytest.raises((AttributeError, KeyError)) as error:
        _parse_config_flags(arguments)
    message = _config_key_error(error.value, ["jaxcl.main", *arguments])
    assert expected in message and "\n" not in message


# ---------------------------------------------------------- functional API


def _float(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


BAD_LOSS_INPUTS = {
    "info_nce_keys_do_not_match_queries": (
        lambda: losses.info_nce(_float((4, 3)), _float((5, 3))),
        "q and k must have the same shape",
    ),
    "info_nce_queue_is_a_vector": (
        lambda: losses.info_nce(_float((4, 3)), _float((4, 3)), _float((3,))),
        "queue must have 2 dimensions",
    ),
    "sup_con_without_views_axis": (
        lambda: losses.sup_con(_float((4, 3)), np.arange(4)),
        "z must have 3 dimensions",
    ),
    "uniformity_of_one_row": (
        lambda: losses.uniformity(_float((1, 3))),
        "at least 2 embeddings",
    ),
    "alpha_cl_of_one_example": (
        lambda: losses.alpha_cl(_float((1, 3)), _float((1, 3))),
        "at least 2 examples",
    ),
    "empty_batch": (
        lambda: losses.nt_xent(_float((0, 3)), _float((0, 3))),
        "empty batch",
    ),
    "boolean_embeddings": (
        lambda: losses.alignment(np.ones((4, 3), bool), np.ones((4, 3), bool)),
        "must be a floating array",
    ),
    "zero_alpha": (
        lambda: losses.alignment(_float((4, 3)), _float((4, 3)), alpha=0.0),
        "alpha must be > 0",
    ),
    "negative_t": (lambda: losses.uniformity(_float((4, 3)), t=-1.0), "t must be > 0"),
    "zero_alpha_exponent": (
        lambda: losses.alpha_cl(_float((4, 3)), _float((4, 3)), alpha_exponent=0.0),
        "alpha_exponent",
    ),
    "mismatched_views_under_jit": (
        lambda: jax.jit(losses.nt_xent)(_float((4, 3)), _float((4, 5))),
        "z1 and z2 must have the same shape",
    ),
}


@pytest.mark.parametrize("case", BAD_LOSS_INPUTS)
def test_bad_loss_inputs_raise_clear_errors(case):
    call, message = BAD_LOSS_INPUTS[case]
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)


def _all_losses(z1, z2, labels, temperature):
    """Every loss of the suite on one batch (jitted once per shape)."""
    stacked = jnp.stack([z1, z2], axis=1)
    return {
        "nt_xent": losses.nt_xent(z1, z2, temperature=temperature),
        "info_nce": losses.info_nce(z1, z2, temperature=temperature),
        "info_nce_queue": losses.info_nce(z1, z2, z2[::-1], temperature=temperature),
        "alignment": losses.alignment(z1, z2),
        "alignment_alpha_1": losses.alignment(z1, z2, alpha=1.0),
        "uniformity": losses.uniformity(jnp.concatenate([z1, z2])),
        "sup_con": losses.sup_con(stacked, labels, temperature=temperature),
        "alpha_cl_exp": losses.alpha_cl(z1, z2, temperature=temperature),
        "alpha_cl_inverse": losses.alpha_cl(
            z1, z2, alpha_type="inverse", alpha_exponent=2.0, inverse_exponent=2.0
        ),
        "quadratic": losses.quadratic(z1, z2),
    }


@jax.jit
def _losses_and_grads(z1, z2, labels, temperature):
    def total(z1, z2):
        values = _all_losses(z1, z2, labels, temperature)
        return sum(values.values()), values

    (_, values), grads = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(z1, z2)
    return values, grads


# Every finite float32, from subnormals to the largest (where x**2 overflows).
finite_float32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def embedding_batches(draw, shapes=((2, 1), (5, 3))):
    # Two shapes only: each one compiles the ten losses and their gradients.
    n, d = draw(st.sampled_from(shapes))
    z1 = draw(hnp.arrays(np.float32, (n, d), elements=finite_float32))
    z2 = draw(hnp.arrays(np.float32, (n, d), elements=finite_float32))
    labels = draw(hnp.arrays(np.int32, (n,), elements=st.integers(0, 2)))
    temperature = draw(st.floats(min_value=0.01, max_value=10.0))
    return z1, z2, labels, temperature


@settings(max_examples=30, deadline=None)
@given(embedding_batches())
def test_fuzzed_losses_and_gradients_are_finite(batch):
    z1, z2, labels, temperature = batch
    values, grads = _losses_and_grads(z1, z2, labels, np.float32(temperature))
    for name, value in values.items():
        chex.assert_shape(value, ())
        chex.assert_type(value, jnp.float32)
        assert np.isfinite(value), (name, value)
    chex.assert_tree_all_finite(grads)


@settings(max_examples=10, deadline=None)
@given(embedding_batches(shapes=((5, 3),)))
def test_fuzzed_losses_of_bfloat16_inputs_are_finite(batch):
    """The compute dtype on GPU and TPU.

    (float16 is left out: its gradients come back in float16, and at an
    all-zero row they are 1 / epsilon = 1e12, the clamp of l2_normalize, far
    beyond float16's largest value 65504.)
    """
    z1, z2, labels, temperature = batch
    limit = float(jnp.finfo(jnp.bfloat16).max) / 2  # beyond it the cast rounds to inf
    z1, z2 = (jnp.asarray(np.clip(z, -limit, limit), jnp.bfloat16) for z in (z1, z2))
    values, grads = _losses_and_grads(z1, z2, labels, np.float32(temperature))
    chex.assert_tree_all_finite((values, grads))
    chex.assert_type(grads, jnp.bfloat16)


def _image(shape, seed=0):
    return tf.random.stateless_uniform(shape, seed=[seed, 1])


SEED = tf.constant([1, 2], tf.int64)
VIEW = augment.get_preset("simclr_imagenet")[0]

BAD_AUGMENT_INPUTS = {
    "uint8_image": (
        lambda: augment.augment_view(np.zeros((8, 8, 3), np.uint8), SEED, (8, 8), VIEW),
        "image must be a floating image in [0, 1], got dtype uint8",
    ),
    "batch_of_images": (
        lambda: augment.augment_view(_image((2, 8, 8, 3)), SEED, (8, 8), VIEW),
        "image must have shape (height, width, channels), got (2, 8, 8, 3)",
    ),
    "image_without_channels": (
        lambda: augment.augment_views(_image((8, 8)), (VIEW,), 0, 0, 0, (8, 8)),
        "image must have shape (height, width, channels), got (8, 8)",
    ),
    "four_channels": (
        lambda: augment.augment_views(_image((8, 8, 4)), (VIEW,), 0, 0, 0, (8, 8)),
        "image must have 1 or 3 channels",
    ),
    "empty_image": (
        lambda: augment.augment_views(_image((0, 8, 3)), (VIEW,), 0, 0, 0, (8, 8)),
        "image is empty",
    ),
    "zero_size": (
        lambda: augment.augment_views(_image((8, 8, 3)), (VIEW,), 0, 0, 0, (0, 8)),
        "size must be (height, width) with both >= 1",
    ),
    "one_number_size": (
        lambda: augment.augment_view(_image((8, 8, 3)), SEED, (8,), VIEW),
        "size must be (height, width)",
    ),
    "bad_seed": (
        lambda: augment.augment_view(_image((8, 8, 3)), tf.constant([1, 2, 3]), (8, 8), VIEW),
        "seed must have shape (2,)",
    ),
    "no_views": (
        lambda: augment.augment_views(_image((8, 8, 3)), (), 0, 0, 0, (8, 8)),
        "views must be a non-empty sequence of AugmentConfig",
    ),
    "preset_name_as_view": (
        lambda: augment.augment_views(_image((8, 8, 3)), ("byol",), 0, 0, 0, (8, 8)),
        "views must be a non-empty sequence of AugmentConfig",
    ),
    "zero_blur_sigma": (
        lambda: augment.AugmentConfig(blur_sigma=(0.0, 1.0)),
        "blur_sigma must satisfy 0 < lo <= hi",
    ),
    "swapped_aspect_ratio": (
        lambda: augment.AugmentConfig(crop_ratio=(2.0, 0.5)),
        "crop_ratio must satisfy 0 < lo <= hi",
    ),
    "negative_brightness": (
        lambda: augment.AugmentConfig(brightness=-0.5),
        "brightness must be in [0.0, inf]",
    ),
    "probability_above_one": (
        lambda: augment.AugmentConfig(flip_prob=1.5),
        "flip_prob must be in [0.0, 1.0]",
    ),
    "blur_kernel_wider_than_image": (
        lambda: augment.AugmentConfig(blur_kernel_fraction=3.0),
        "blur_kernel_fraction must be in [0.0, 1.0]",
    ),
    "blur_of_tiny_image": (
        lambda: augment.gaussian_blur(_image((2, 2, 3)), SEED, kernel_size=7),
        "a kernel of side 7 needs images larger than 3 pixels",
    ),
    "zero_eval_crop": (
        lambda: augment.preprocess_eval(_image((8, 8, 3)), (8, 8), crop_fraction=0.0),
        "crop_fraction must be in (0, 1]",
    ),
}


@pytest.mark.parametrize("case", BAD_AUGMENT_INPUTS)
def test_bad_augmentation_inputs_raise_clear_errors(case):
    call, message = BAD_AUGMENT_INPUTS[case]
    with pytest.raises(ValueError) as error:
        call()
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@st.composite
def augment_views_and_images(draw):
    channels = draw(st.sampled_from([1, 3]))
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    size = (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    low = draw(st.floats(0.01, 1.0))
    ratio_low = draw(st.floats(0.2, 2.0))
    sigma_low = draw(st.floats(0.01, 3.0))
    view = augment.AugmentConfig(
        crop=draw(st.booleans()),
        crop_scale=(low, draw(st.floats(low, 1.0))),
        crop_ratio=(ratio_low, draw(st.floats(ratio_low, 3.0))),
        resize_method=draw(st.sampled_from(["bilinear", "bicubic", "area", "nearest"])),
        flip_prob=draw(st.sampled_from([0.0, 0.5, 1.0])),
        jitter_prob=draw(st.sampled_from([0.0, 0.8, 1.0])),
        brightness=draw(st.floats(0.0, 2.0)),
        contrast=draw(st.floats(0.0, 2.0)),
        saturation=draw(st.floats(0.0, 2.0)),
        hue=draw(st.floats(0.0, 0.5)),
        grayscale_prob=draw(st.sampled_from([0.0, 1.0])),
        blur_prob=draw(st.sampled_from([0.0, 1.0])),
        blur_sigma=(sigma_low, draw(st.floats(sigma_low, 5.0))),
        blur_kernel_fraction=draw(st.floats(0.0, 1.0)),
        solarize_prob=draw(st.sampled_from([0.0, 1.0])),
        solarize_threshold=draw(st.floats(0.0, 1.0)),
    )
    # Edge images as well as noise: constant, black-and-white, near-zero.
    kind = draw(st.sampled_from(["uniform", "zeros", "ones", "binary", "tiny"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    shape = (height, width, channels)
    image = {
        "uniform": lambda: rng.uniform(size=shape),
        "zeros": lambda: np.zeros(shape),
        "ones": lambda: np.ones(shape),
        "binary": lambda: rng.integers(0, 2, size=shape),
        "tiny": lambda: rng.uniform(size=shape) * 1e-38,
    }[kind]().astype(np.float32)
    return image, size, view, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=25, deadline=None)
@given(augment_views_and_images())
def test_fuzzed_augmentations_give_finite_images_in_range(case):
    image, size, view, seed = case
    out = augment.augment_view(image, augment.view_seed(seed, 0, 0, 0), size, view).numpy()
    assert out.shape == (*size, image.shape[-1]) and out.dtype == np.float32
    assert np.all(np.isfinite(out)) and out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("preset", augment.PRESET_NAMES)
def test_every_preset_gives_finite_views_of_edge_images(preset):
    views = augment.get_preset(preset) * 2
    for image in (np.zeros((5, 3, 3), np.float32), np.ones((1, 1, 3), np.float32)):
        out = augment.augment_views(image, views[:2], 0, 0, 0, (7, 9)).numpy()
        assert out.shape == (2, 7, 9, 3) and np.all(np.isfinite(out))


def test_train_step_rejects_a_batch_of_the_wrong_shape():
    trainer = Trainer(_smoke_config())
    state = trainer.abstract_state()

    sharded = NamedSharding(trainer.mesh, P("data"))

    def trace(views_shape, labels_shape):  # tracing runs the checks; nothing compiles
        batch = {
            "views": jax.ShapeDtypeStruct(views_shape, jnp.float32, sharding=sharded),
            "label": jax.ShapeDtypeStruct(labels_shape, jnp.int32, sharding=sharded),
        }
        with jax.set_mesh(trainer.mesh):
            jax.eval_shape(trainer._train_step, state, batch)

    trace((16, 2, 16, 16, 1), (16,))
    with pytest.raises(AssertionError, match=r"input 0 has shape \(16, 2, 16, 16, 3\)"):
        trace((16, 2, 16, 16, 3), (16,))  # 3 channels; the model takes 1
    with pytest.raises(AssertionError, match=r"input 0 has shape \(8,\)"):
        trace((16, 2, 16, 16, 1), (8,))


def test_nonfinite_monitor_counts_on_device_and_reads_once():
    monitor = NonfiniteMonitor()
    assert monitor.read() == (None, 0, 0)
    for step, finite in enumerate([1, 0, 0, 1, 0, 0, 0, 1], start=1):
        monitor.update(jnp.asarray(finite, jnp.int32), step)
    # First bad step 2, five bad in all, the longest run three (steps 5-7).
    assert monitor.read() == (2, 5, 3)
