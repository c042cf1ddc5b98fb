"""The terminal of a run: jaxcl's lines on the screen, library logs in WORKDIR/log.txt."""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from jaxcl import cli, console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(REPO, "configs", "simclr_fashion_mnist.py") + ":smoke"
# absl's format (I1206 03:50:16.931467 ... file.py:849]) and Python's default (INFO:name:).
LIBRARY_INFO_LINE = re.compile(r"^(I\d{4} \d\d:\d\d:\d\d\.\d+ |INFO:)", re.MULTILINE)


def test_summary_table_shows_scores_wall_time_and_outputs(tmp_path):
    (tmp_path / "plots").mkdir()
    results = {"linear_top1": 0.88734, "knn_top1": 0.8288, "loss": 3.21, "skipped_steps": 0}
    table = console.format_summary(results, wall_seconds=1265.4, workdir=str(tmp_path))
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in table.splitlines()[1:-1])
    assert rows == {
        "linear probe top-1": "88.73%",
        "kNN top-1": "82.88%",
        "final training loss": "3.2100",
        "skipped steps (non-finite)": "0",
        "wall time": "21 min 05 s",
        "results": f"{tmp_path}/results.json",
        "plots": f"{tmp_path}/plots/",
    }
    # No plots written, no plots row; baselines and fine-tuning rows when present.
    table = console.format_summary(
        {"finetune_top1": 0.5, "baseline_raw_pixels_top1": 0.25}, wall_seconds=5, workdir="/x"
    )
    assert "plots" not in table and "fine-tuned top-1" in table and "25.00%" in table
    assert "0 min 05 s" in table


def test_header_names_what_trains_where():
    config = {"method": "simclr", "model": "resnet18", "dataset": "fashion_mnist"}
    config = type("Config", (), {**config, "global_batch_size": 256})()
    lines = console.header_lines(
        config,
        total_steps=2106,
        devices=8,
        processes=2,
        workdir="runs/a",
        log_path="runs/a/log",
    )
    assert lines == [
        "jaxcl: simclr | resnet18 | fashion_mnist",
        "  8 devices in 2 processes | global batch 256 | 2106 steps",
        "  workdir runs/a",
        "  library logs in runs/a/log",
    ]


def test_a_missing_package_is_named_with_its_install_command():
    line = cli.user_error_line(ModuleNotFoundError("No module named 'torch'", name="torch"))
    assert line == (
        "the Python package 'torch' is not installed; run `pip install -e '.[weights]'` in the "
        "jaxcl checkout (or `pip install torch`)"
    )
    line = cli.missing_package_line(ModuleNotFoundError(name="tensorflow_datasets.core"))
    assert "'tensorflow-datasets'" in line and "`pip install -e .`" in line
    # jaxcl's own module missing is a broken install, not the user's to fix here.
    assert cli.missing_package_line(ModuleNotFoundError(name="jaxcl.models")) is None


def test_progress_counts_a_step_only_once_its_output_is_ready():
    @jax.jit
    def slow_step(x):
        for _ in range(20):
            x = jnp.tanh(x @ x.T / x.shape[0])
        return x.sum()

    x = jnp.ones((512, 512))
    outputs = []
    with console.StepProgress(total=6, initial=1) as bar:
        for step in range(1, 6):
            outputs.append(slow_step(x + step))
            bar.dispatched(outputs[-1])
            # The step just dispatched is not counted; every counted one is done.
            assert bar.count == 1 + step - 1
            assert all(output.is_ready() for output in outputs[:-1])
        bar.flush()
        assert bar.count == 6 and outputs[-1].is_ready()
    disabled = console.StepProgress(total=3, enabled=False)
    disabled.dispatched(outputs[0])
    assert disabled.count is None


def _main_job(workdir, *extra, env=None):
    command = [
        sys.executable, "-m", "jaxcl.main", f"--config={SMOKE}", f"--workdir={workdir}",
        "--config.progress_bar=True", *extra,
    ]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if k != "JAXCL_VERBOSE"}
    environment.update(env or {})
    return subprocess.run(
        command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_main_job_screen_has_header_bar_checkpoints_and_summary_and_no_library_info(tmp_path):
    workdir = tmp_path / "run"
    done = _main_job(workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    screen = done.stdout + done.stderr
    assert not LIBRARY_INFO_LINE.search(screen), LIBRARY_INFO_LINE.findall(screen)
    assert "Unable to initialize backend" not in screen
    assert "FeatureConnector.dtype is deprecated" not in screen
    lines = done.stdout.splitlines()
    assert lines[0] == "jaxcl: simclr | resnet_tiny | synthetic"
    # The suite's XLA_FLAGS give the subprocess 8 fake CPU devices.
    devices = len(jax.devices())
    assert lines[1] == f"  {devices} devices in 1 process | global batch 16 | 4 steps"
    assert lines[2:4] == [f"  workdir {workdir}", f"  library logs in {workdir}/log.txt"]
    assert [line for line in lines if line.startswith("checkpoint:")] == [
        f"checkpoint: step {step} -> {workdir}/checkpoints" for step in (2, 4)
    ]
    results = json.loads((workdir / "results.json").read_text())
    assert f"linear probe top-1{' ' * 22}{100 * results['linear_top1']:.2f}%" in done.stdout
    assert f"results{' ' * 33}{workdir}/results.json" in done.stdout
    # The bar reached the last step (tqdm's final frame on stderr).
    assert re.search(r"4/4 \[", done.stderr), done.stderr[-2000:]
    # The logs went to the file, not nowhere: orbax's checkpoint lines.
    log = (workdir / "log.txt").read_text()
    assert "Finished saving checkpoint" in log
    assert "CheckpointManager created" in log
    assert "checkpoint: step 4" in log  # the screen's lines are in the log too

    # JAXCL_VERBOSE=1 brings the library's lines back (here: a finished run evaluated again).
    again = _main_job(workdir, env={"JAXCL_VERBOSE": "1"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert LIBRARY_INFO_LINE.search(again.stdout + again.stderr)
