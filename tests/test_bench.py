"""The benchmark scripts run: a two-step smoke of bench/first_step.py.

The benchmarks are not timed here (timings on this machine are noise); this
only keeps them in step with the library they measure.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_first_step_benchmark_runs_the_training_loop_without_host_syncs():
    command = [
        sys.executable,
        os.path.join(ROOT, "bench", "first_step.py"),
        "--config",
        os.path.join(ROOT, "configs", "simclr_fashion_mnist.py") + ":smoke",
        "--steps",
        "2",
        "--window",
        "1",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "first_step"
    # Two windows of one step; the transfer guard would have raised on a host sync.
    assert (result["windows"], result["window_steps"]) == (2, 1)
    assert result["implicit_device_to_host_transfers"] == 0
    assert result["nonfinite"] is False
    assert result["steady_step_s_median"] > 0
    # The smoke config's global batch of 16 over the (rounded) median step.
    assert result["images_per_sec"] == pytest.approx(16 / result["steady_step_s_median"], rel=1e-2)
