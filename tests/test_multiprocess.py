"""Two processes x two CPU devices train exactly like one process x four devices.

The runs go through the real CLI (``python -m jaxcl.main``) with
``jax.distributed`` on localhost and gloo collectives, the code path of a GPU
cluster or TPU pod. All three processes start together (the single-process
reference alongside the two-process run) and every assertion reuses them.
The command-line equivalent is in docs/scaling.md.
"""

import os
import re
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxcl import local_processes
from jaxcl.checkpoint import Checkpointer
from jaxcl.config import load_config
from jaxcl.metric_writer import read_metrics
from jaxcl.train import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "simclr_fashion_mnist.py") + ":smoke"
NUM_STEPS = 3
OVERRIDES = (
    "--config.eval.run_at_end=False",
    f"--config.num_steps={NUM_STEPS}",
    "--config.global_batch_size=16",
    "--config.log_every_steps=1",
    "--config.checkpoint_every_steps=2",
)
# A hang detector, not a speed limit: the runs need about 80 s of CPU in all,
# and on a shared 2-core machine under load they have taken 200 s of wall time.
TIMEOUT_S = 420
TOLERANCE = 1e-5


def _start(name, workdir, log_dir, num_devices, extra_flags=()):
    log_path = os.path.join(log_dir, f"{name}.log")
    command = [sys.executable, "-m", "jaxcl.main", f"--config={CONFIG}", f"--workdir={workdir}"]
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [*command, *OVERRIDES, *extra_flags],
            cwd=REPO,
            env=local_processes.cpu_environment(num_devices),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return name, process, log_path


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def _wait(runs, timeout_s):
    """Waits for every process; on a failure or timeout kills the rest and fails with logs."""
    deadline = time.monotonic() + timeout_s
    failed = False
    try:
        while any(process.poll() is None for _, process, _ in runs):
            if any(process.poll() not in (None, 0) for _, process, _ in runs):
                failed = True  # a peer would wait for the dead one until its heartbeat times out
                break
            if time.monotonic() > deadline:
                failed = True
                break
            time.sleep(0.2)
    finally:
        for _, process, _ in runs:
            if process.poll() is None:
                process.kill()
                process.wait()
    failed = failed or any(process.returncode != 0 for _, process, _ in runs)
    if failed:
        report = [
            f"--- {name} (exit {process.returncode}), last lines of {path}:\n{_read(path)[-6000:]}"
            for name, process, path in runs
        ]
        pytest.fail(f"a run failed or exceeded {timeout_s} s\n" + "\n".join(report))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Workdirs and logs of a 1 x 4-device run and a 2 x 2-device run of the same config."""
    root = tmp_path_factory.mktemp("multiprocess")
    single, multi = str(root / "one_process"), str(root / "two_processes")
    address = f"localhost:{local_processes.free_port()}"
    started = [_start("single", single, root, num_devices=4)]
    for process_id in range(2):
        started.append(
            _start(
                f"process_{process_id}",
                multi,
                root,
                num_devices=2,
                extra_flags=(
                    f"--coordinator_address={address}",
                    "--num_processes=2",
                    f"--process_id={process_id}",
                ),
            )
        )
    _wait(started, TIMEOUT_S)
    logs = {name: _read(path) for name, _, path in started}
    return {"single": single, "multi": multi, "logs": logs}


def _restore(workdir):
    """The newest checkpoint of ``workdir``, restored onto this process's 8 devices."""
    trainer = Trainer(load_config(workdir))
    checkpointer = Checkpointer(workdir)
    steps = checkpointer.all_steps()
    step, state = checkpointer.restore(trainer.abstract_state())
    checkpointer.close()
    return steps, step, state


def test_losses_match_one_process(runs):
    single, multi = read_metrics(runs["single"]), read_metrics(runs["multi"])
    # One record per step: only process 0 writes metrics.
    assert [r["step"] for r in multi] == [r["step"] for r in single] == [1, 2, 3]
    for name in ("loss", "probe_loss", "grad_norm"):
        np.testing.assert_allclose(
            [r[name] for r in multi],
            [r[name] for r in single],
            rtol=TOLERANCE,
            atol=TOLERANCE,
            err_msg=name,
        )


def test_two_process_checkpoint_restores_on_other_device_count(runs):
    """Written by 2 processes x 2 devices, restored by 1 process x 8 devices (resharded)."""
    steps_multi, step_multi, state_multi = _restore(runs["multi"])
    steps_single, step_single, state_single = _restore(runs["single"])
    assert steps_multi == steps_single == [2, NUM_STEPS]
    assert step_multi == step_single == NUM_STEPS
    assert int(state_multi["step"]) == NUM_STEPS
    params = jax.tree.leaves(state_multi["params"])
    assert params and all(len(leaf.sharding.device_set) == len(jax.devices()) for leaf in params)
    state_multi, state_single = jax.device_get((state_multi, state_single))
    for name in ("params", "batch_stats", "opt_state"):
        leaves_multi = jax.tree.leaves(state_multi[name])
        leaves_single = jax.tree.leaves(state_single[name])
        assert len(leaves_multi) == len(leaves_single) > 0, name
        for a, b in zip(leaves_multi, leaves_single, strict=True):
            np.testing.assert_allclose(a, b, rtol=TOLERANCE, atol=TOLERANCE, err_msg=name)


def test_only_process_zero_reports(runs):
    logs = runs["logs"]
    # Process 0's screen ends with the summary table; process 1's has none.
    assert "wall time" in logs["process_0"] and "results.json" in logs["process_0"]
    assert "wall time" not in logs["process_1"]
    # The results were logged, in process 0's log file (not on any screen).
    with open(os.path.join(runs["multi"], "log.txt"), encoding="utf-8") as f:
        assert "final results" in f.read()
    assert os.path.exists(os.path.join(runs["multi"], "log.process_1.txt"))
    # No absl INFO lines ("I1128 12:00:00.0 123 file.py:12] ...") from process 1
    # once it knows its index (jax.distributed's own "Connecting to" comes before).
    info = re.findall(r"^I\d{4} [\d:.]+ +\d+ (\S+\.py):\d+\]", logs["process_1"], re.M)
    assert set(info) <= {"distributed.py"}, info
    assert os.path.exists(os.path.join(runs["multi"], "config.json"))
    assert not os.path.exists(os.path.join(runs["multi"], "config.json.tmp"))
