"""A rehearsal of the pod path on one machine, before a pod's budget is spent.

    python -m jaxcl.experiments.pod_rehearsal --root=/tmp/rehearsal

What it runs is what a pod runs, at small size:

1. a fake ImageNet in the real manual-download format
   (``jaxcl.data.fake_imagenet``), prepared by TFDS's own ``imagenet2012``
   builder from ``manual_dir`` on first use, as the real one is;
2. ``configs/simclr_imagenet.py`` with only its sizes overridden (steps,
   batch, image size, encoder width, probe epochs) and the data's location,
   written to ``ROOT/rehearsal_config.py`` so that the difference is on disk;
3. ``python -m jaxcl.main`` on several processes (``jax.distributed`` on
   localhost, gloo collectives) with fake CPU devices in each;
4. SIGTERM to one process mid-run: every process must agree on one step,
   save it and exit with status 143;
5. the same command again: it resumes from that checkpoint, trains to the end,
   evaluates on ImageNet's ``validation`` split by streaming features, and
   writes ``results.json``.

Prints, and returns from ``rehearse``, each phase's exit codes and peak
resident memory per process, the step every process stopped at, and the
results.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from absl import app, flags

from jaxcl import configs, local_processes
from jaxcl.data import fake_imagenet
from jaxcl.metric_writer import read_metrics

__all__ = ["rehearse", "write_rehearsal_config"]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = configs.path("simclr_imagenet")

_CONFIG_TEMPLATE = '''"""configs/simclr_imagenet.py with its sizes overridden: the pod rehearsal."""

import importlib.util

_spec = importlib.util.spec_from_file_location("simclr_imagenet", {recipe!r})
_recipe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_recipe)


def get_config(arg=""):
    config = _recipe.get_config(arg)
    # Where the (fake) ImageNet is.
    config.data_dir = {data_dir!r}
    config.dataset_options = {{"manual_dir": {manual_dir!r}}}
    # Sizes only: everything else is the recipe's.
    config.num_steps = {num_steps}
    config.global_batch_size = {batch}
    config.image_size = 32
    config.model_options = {{"stem": "imagenet", "width_multiplier": 0.0625}}
    config.log_every_steps = 1
    config.checkpoint_every_steps = 4
    config.eval.linear_epochs = {linear_epochs}
    config.eval.linear_batch_size = 32
    config.eval.feature_batch_size = 16
    config.progress_bar = False
    return config
'''


def write_rehearsal_config(
    root: str, *, num_steps: int, batch: int, linear_epochs: int = 50
) -> str:
    """Writes ``root/rehearsal_config.py`` and returns its path."""
    path = os.path.join(root, "rehearsal_config.py")
    text = _CONFIG_TEMPLATE.format(
        recipe=RECIPE,
        data_dir=os.path.join(root, "tfds"),
        manual_dir=os.path.join(root, "manual"),
        num_steps=num_steps,
        batch=batch,
        linear_epochs=linear_epochs,
    )
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _launch(config_path, workdir, logs, phase, processes, devices_per_process):
    address = f"localhost:{local_processes.free_port()}"
    launched = []
    for process_id in range(processes):
        log_path = os.path.join(logs, f"{phase}_process_{process_id}.log")
        command = [
            sys.executable, "-m", "jaxcl.main", f"--config={config_path}",
            f"--workdir={workdir}", f"--coordinator_address={address}",
            f"--num_processes={processes}", f"--process_id={process_id}",
        ]  # fmt: skip
        with open(log_path, "w", encoding="utf-8") as log:
            env = local_processes.cpu_environment(devices_per_process)
            process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        launched.append((process, log_path))
    return launched


def _peak_rss_mib(pid: int) -> float | None:
    """The process's own high-water mark of resident memory (VmHWM), while it runs."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # exited meanwhile, or no /proc
        return None
    return None


def _wait_all(launched, timeout_s):
    """Exit codes and peak RSS (MiB) of every process; kills all on a timeout.

    The peak is the last VmHWM read while the process ran (polled every 0.2 s),
    so growth in its final moment can be missed.
    """
    deadline = time.monotonic() + timeout_s
    codes, peaks = [None] * len(launched), [0.0] * len(launched)
    while None in codes:
        for i, (process, _) in enumerate(launched):
            if codes[i] is None:
                peaks[i] = max(peaks[i], _peak_rss_mib(process.pid) or 0.0)
                codes[i] = process.poll()
        if time.monotonic() > deadline:
            _abort_with_tracebacks(launched)
            logs = ", ".join(path for _, path in launched)
            raise TimeoutError(
                f"the rehearsal exceeded {timeout_s} s; every thread's Python traceback is "
                f"at the end of {logs}"
            )
        time.sleep(0.2)
    return codes, peaks


def _abort_with_tracebacks(launched) -> None:
    """Ends hung processes with SIGABRT, so that faulthandler writes where each thread
    was into its log (``PYTHONFAULTHANDLER``, see ``jaxcl.local_processes``)."""
    for process, _ in launched:
        if process.poll() is None:
            process.send_signal(signal.SIGABRT)
    for process, _ in launched:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def _tail(launched) -> str:
    return "\n".join(open(path, encoding="utf-8", errors="replace").read()[-3000:]
                     for _, path in launched)  # fmt: skip


def rehearse(
    root: str,
    *,
    processes: int = 2,
    devices_per_process: int = 2,
    num_steps: int = 40,
    stop_after_step: int = 3,
    num_validation: int = 48,
    linear_epochs: int = 50,
    timeout_s: float = 900,
) -> dict:
    """Runs the rehearsal in ``root`` (see the module docstring) and reports it.

    Args:
      root: a scratch directory (archives, TFDS data_dir, workdir, logs).
      processes: ``jax.distributed`` processes.
      devices_per_process: fake CPU devices in each.
      num_steps: training steps.
      stop_after_step: SIGTERM goes to the last process once step
        ``stop_after_step`` is logged.
      num_validation: fake ImageNet validation images; the classes are theirs.
      linear_epochs: epochs of the linear probe at the end.
      timeout_s: per phase.

    Returns:
      A dict with ``archives``, ``config``, ``stop`` and ``resume`` phases
      (``exit_codes``, ``peak_rss_mib``), ``stopped_at_step``,
      ``logged_steps`` and ``results`` (``results.json``).
    """
    os.makedirs(root, exist_ok=True)
    manual_dir = os.path.join(root, "manual")
    archives = fake_imagenet.write_manual_archives(manual_dir, num_validation=num_validation)
    config_path = write_rehearsal_config(
        root,
        num_steps=num_steps,
        batch=2 * processes * devices_per_process,
        linear_epochs=linear_epochs,
    )
    workdir, logs = os.path.join(root, "workdir"), os.path.join(root, "logs")
    os.makedirs(logs, exist_ok=True)
    report = {"archives": archives, "config": config_path}

    launched = _launch(config_path, workdir, logs, "stop", processes, devices_per_process)
    deadline = time.monotonic() + timeout_s
    while True:
        steps = [record["step"] for record in read_metrics(workdir)]
        if steps and steps[-1] >= stop_after_step:
            launched[-1][0].send_signal(signal.SIGTERM)
            break
        if any(process.poll() is not None for process, _ in launched):
            break  # reported below with the exit codes
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    codes, peaks = _wait_all(launched, timeout_s)
    report["stop"] = {"exit_codes": codes, "peak_rss_mib": peaks, "log_tail": _tail(launched)}
    steps = [record["step"] for record in read_metrics(workdir)]
    report["stopped_at_step"] = steps[-1] if steps else None

    launched = _launch(config_path, workdir, logs, "resume", processes, devices_per_process)
    codes, peaks = _wait_all(launched, timeout_s)
    report["resume"] = {"exit_codes": codes, "peak_rss_mib": peaks, "log_tail": _tail(launched)}
    report["logged_steps"] = [record["step"] for record in read_metrics(workdir)]
    results_path = os.path.join(workdir, "results.json")
    if os.path.exists(results_path):
        with open(results_path, encoding="utf-8") as f:
            report["results"] = json.load(f)
    return report


def _main(argv):
    del argv
    FLAGS = flags.FLAGS
    report = rehearse(
        FLAGS.root, processes=FLAGS.processes, devices_per_process=FLAGS.devices_per_process
    )
    for phase in ("stop", "resume"):
        report[phase].pop("log_tail")
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    flags.DEFINE_string("root", None, "Scratch directory of the rehearsal.")
    flags.DEFINE_integer("processes", 2, "jax.distributed processes.")
    flags.DEFINE_integer("devices_per_process", 2, "Fake CPU devices per process.")
    flags.mark_flags_as_required(["root"])
    app.run(_main)
