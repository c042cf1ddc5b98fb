"""The benchmark scripts run: two-step smokes of bench/first_step.py and bench/gpu.py.

The benchmarks are not timed here (timings on this machine are noise); this
only keeps them in step with the library they measure.
"""

import importlib.util
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


def test_gpu_benchmark_runs_at_toy_sizes_on_cpu():
    """bench/gpu.py --tiny: every part (train step and FLOPs, the PyTorch reference,
    a JPEG folder through the loop in both augmentation modes) runs and reports."""
    command = [sys.executable, os.path.join(ROOT, "bench", "gpu.py"), "--tiny"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "gpu" and result["errors"] == []
    (step,) = result["train_step"]
    assert step["global_batch"] == 8 and step["jaxcl_examples_per_s"] > 0
    assert step["flops_per_step"] > 1e6  # XLA counted the step's convolutions
    # The CPU subprocess that counts for a GPU (whose backend costs no lowered
    # program) gives the same count as the run's own.
    spec = importlib.util.spec_from_file_location(
        "gpu_bench", os.path.join(ROOT, "bench", "gpu.py")
    )
    gpu_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_bench)
    toy = gpu_bench.argparse.Namespace(image_size=32, dtype="float32", tiny=True)
    assert gpu_bench.flops_on_cpu(toy, 8) == step["flops_per_step"]
    assert step["mfu"] == pytest.approx(step["flops_per_step"] / step["jaxcl_step_s"] / 989e12)
    if importlib.util.find_spec("torch") is None:  # the 'bench' extra is not installed
        assert (step["torch_examples_per_s"], step["torch"]) == (None, "torch is not installed")
    else:
        assert step["torch_examples_per_s"] > 0, step["torch"]
    modes = {row["augment_on_device"]: row for row in result["end_to_end"]}
    assert set(modes) == {"false", "true"}
    assert all(
        row["examples_per_s"] > 0 and 0 <= row["input_wait_fraction"] < 1 for row in modes.values()
    )
