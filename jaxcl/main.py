"""Command line: ``python -m jaxcl.main --config=configs/<name>.py --workdir=DIR``.

Flags only; the work is ``jaxcl.run.train_and_evaluate``. Before JAX starts,
the entry point applies jaxcl's XLA:CPU defaults (``jaxcl.xla_defaults``). Any config key can
be overridden, e.g. ``--config.global_batch_size=512 --config.num_epochs=5``.
Multi-process runs start ``jax.distributed`` from the flags below or, without
them, by auto-detection (TPU pods, SLURM).
"""

from __future__ import annotations

import os
import time

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxcl import cli, console, distributed, xla_defaults
from jaxcl.run import train_and_evaluate


def _define_flags():
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Training config file, e.g. configs/simclr_fashion_mnist.py[:smoke].",
        lock_config=True,
    )
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
    flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
    flags.DEFINE_integer("process_id", None, "Index of this process (multi-process).")
    flags.DEFINE_string(
        "compilation_cache_dir",
        xla_defaults.DEFAULT_COMPILATION_CACHE,
        "JAX's persistent compilation cache: later runs of a config skip compiling; '' = off.",
    )
    flags.DEFINE_bool(
        "fork", False, "Resume the workdir's checkpoint under a config of another run."
    )
    cli.define_traceback_flag()
    flags.mark_flags_as_required(["config", "workdir"])


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    started = time.perf_counter()
    # Before JAX starts: its backend probing logs go to the file with the rest.
    routing = console.route_logs(verbose=console.verbose_requested(FLAGS["verbosity"].present))
    xla_defaults.enable_compilation_cache(FLAGS.compilation_cache_dir)
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    routing.write_to(FLAGS.workdir, jax.process_index())
    results = train_and_evaluate(FLAGS.config, FLAGS.workdir, fork=FLAGS.fork)
    if distributed.is_main_process():
        logging.info("final results: %s", results)
        wall_seconds = time.perf_counter() - started
        print(console.format_summary(results, wall_seconds=wall_seconds, workdir=FLAGS.workdir))


def run():
    """Console-script entry point ``jaxcl-train``."""
    # Before JAX starts its CPU backend, which reads XLA_FLAGS once.
    xla_defaults.apply_cpu_defaults()
    # Before the flags load a config file, which may import TensorFlow (its C++
    # INFO lines, e.g. oneDNN's on AVX-512 CPUs, would precede one-line errors).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _define_flags()
    app.run(cli.report_user_errors("jaxcl.main", _main), flags_parser=cli.parse_flags("jaxcl.main"))


if __name__ == "__main__":
    run()
