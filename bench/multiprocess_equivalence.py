"""One process x 4 devices against 2 processes x 2 devices, and a resume across them.

Usage::

    python bench/multiprocess_equivalence.py               # 10 SimCLR smoke steps
    python bench/multiprocess_equivalence.py --num_steps=6 --keep=/tmp/mp

Three runs of ``configs/simclr_fashion_mnist.py:smoke`` through the CLI, on CPU
with fake devices (``--xla_force_host_platform_device_count``) and, for two
processes, ``jax.distributed`` on localhost with gloo collectives:

- ``1x4``: one process with 4 devices;
- ``2x2``: two processes with 2 devices each (started together with ``1x4``);
- ``1x8``: one process with 8 devices, the control: it differs from ``1x4`` only
  in the order of float32 sums, as ``2x2`` should;
- ``1x4 -> 2x2``: a copy of ``1x4``'s workdir without its last checkpoint,
  resumed by two processes from the midway checkpoint (a checkpoint written by
  one process, resharded onto two).

Prints the loss of every step of each run and the largest absolute differences
from ``1x4`` of the final train states (restored in this process, on one device).
The figures in docs/scaling.md come from this script.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from jaxcl import local_processes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "simclr_fashion_mnist.py") + ":smoke"


def _launch(name, workdir, overrides, *, num_processes, devices_per_process, log_dir):
    """Starts the processes of one run; returns [(log path, Popen)]."""
    address = f"localhost:{local_processes.free_port()}"
    started = []
    for process_id in range(num_processes):
        command = [sys.executable, "-m", "jaxcl.main", f"--config={CONFIG}"]
        command += [f"--workdir={workdir}", *overrides]
        if num_processes > 1:
            command += [
                f"--coordinator_address={address}",
                f"--num_processes={num_processes}",
                f"--process_id={process_id}",
            ]
        log_path = os.path.join(log_dir, f"{name}.process_{process_id}.log")
        with open(log_path, "w", encoding="utf-8") as log:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env=local_processes.cpu_environment(devices_per_process),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append((log_path, process))
    return started


def _wait(started, timeout_s):
    deadline = time.monotonic() + timeout_s
    while any(p.poll() is None for _, p in started):
        crashed = any(p.poll() not in (None, 0) for _, p in started)
        if crashed or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for _, process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
    failed = [(path, p.returncode) for path, p in started if p.returncode != 0]
    for path, code in failed:
        with open(path, encoding="utf-8", errors="replace") as f:
            print(f"--- {path} exited {code}:\n{f.read()[-4000:]}", file=sys.stderr)
    if failed:
        raise SystemExit(f"{len(failed)} process(es) failed or timed out")


def _final_state(workdir):
    import jax

    from jaxcl.restore import restore_run

    run = restore_run(workdir)
    return run.step, jax.device_get(run.state)


def _max_abs_difference(a, b, name):
    import jax
    import numpy as np

    leaves_a, leaves_b = jax.tree.leaves(a[name]), jax.tree.leaves(b[name])
    assert len(leaves_a) == len(leaves_b) > 0, name
    return max(
        float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
        for x, y in zip(leaves_a, leaves_b, strict=True)
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_steps", type=int, default=10)
    parser.add_argument("--global_batch_size", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per phase")
    parser.add_argument("--keep", default="", help="keep the workdirs and logs here")
    args = parser.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # this process only restores and compares
    if args.num_steps < 2:
        parser.error("--num_steps must be >= 2 (the resume starts halfway)")
    midway = args.num_steps // 2
    overrides = [
        "--config.eval.run_at_end=False",
        f"--config.num_steps={args.num_steps}",
        f"--config.global_batch_size={args.global_batch_size}",
        "--config.log_every_steps=1",
        f"--config.checkpoint_every_steps={midway}",
        f"--config.max_checkpoints_to_keep={args.num_steps}",  # keep the midway one
    ]
    root = args.keep or tempfile.mkdtemp(prefix="jaxcl_multiprocess_")
    os.makedirs(root, exist_ok=True)
    names = ("1x4", "1x8", "2x2", "1x4_then_2x2")
    workdirs = {name: os.path.join(root, name) for name in names}
    for workdir in workdirs.values():
        shutil.rmtree(workdir, ignore_errors=True)

    started = time.perf_counter()
    runs = _launch(
        "1x4", workdirs["1x4"], overrides, num_processes=1, devices_per_process=4, log_dir=root
    )
    runs += _launch(
        "1x8", workdirs["1x8"], overrides, num_processes=1, devices_per_process=8, log_dir=root
    )
    runs += _launch(
        "2x2", workdirs["2x2"], overrides, num_processes=2, devices_per_process=2, log_dir=root
    )
    _wait(runs, args.timeout)
    # The resume: 1x4's checkpoint at the midway step, continued by two processes.
    resumed = workdirs["1x4_then_2x2"]
    os.makedirs(resumed)
    shutil.copytree(
        os.path.join(workdirs["1x4"], "checkpoints", str(midway)),
        os.path.join(resumed, "checkpoints", str(midway)),
    )
    _wait(
        _launch(
            "1x4_then_2x2",
            resumed,
            overrides,
            num_processes=2,
            devices_per_process=2,
            log_dir=root,
        ),
        args.timeout,
    )
    wall = time.perf_counter() - started

    from jaxcl.metric_writer import read_metrics

    losses = {
        name: {r["step"]: r["loss"] for r in read_metrics(workdir)}
        for name, workdir in workdirs.items()
    }
    print(f"{args.num_steps} steps, global batch {args.global_batch_size}, runs took {wall:.0f} s")
    print("| step | loss 1x4 | loss 1x8 | loss 2x2 | loss 1x4 -> 2x2 |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for step in range(1, args.num_steps + 1):
        cells = [losses[name].get(step) for name in workdirs]
        print(f"| {step} | " + " | ".join("" if c is None else f"{c:.7f}" for c in cells) + " |")
    reference_step, reference = _final_state(workdirs["1x4"])
    for name in names[1:]:
        step, state = _final_state(workdirs[name])
        assert step == reference_step == args.num_steps, (name, step, reference_step)
        loss_gap = max(abs(losses[name][s] - losses["1x4"][s]) for s in losses[name])
        gaps = {key: _max_abs_difference(state, reference, key) for key in ("params", "opt_state")}
        print(
            f"{name} vs 1x4 at step {step}: max |loss difference| {loss_gap:.2e}, "
            f"max |param difference| {gaps['params']:.2e}, "
            f"max |optimizer state difference| {gaps['opt_state']:.2e}"
        )
    if not args.keep:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
