"""Command line for evaluation: ``python -m jaxcl.eval --workdir=DIR``.

Restores the newest checkpoint of ``DIR``, extracts frozen encoder features of
the evaluation splits, and writes ``DIR/results.json`` with the linear
evaluation top-1 (``linear_top1``), the weighted-kNN top-1 (``knn_top1``) and
the alignment and uniformity of the test features (Wang & Isola 2020), plus the
plots. ``python -m jaxcl.eval --config=configs/X.py --baselines`` prints the two
linear-probe baselines of a config (raw pixels, the random encoder) instead.
"""

from __future__ import annotations

import json

from absl import app, flags, logging
from ml_collections import config_flags

from jaxcl import xla_defaults
from jaxcl.run import evaluate_baselines, evaluate_workdir


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    if FLAGS.baselines:
        if FLAGS.config is None:
            raise app.UsageError("--baselines needs --config=configs/<name>.py")
        results = evaluate_baselines(FLAGS.config)
    else:
        if FLAGS.workdir is None:
            raise app.UsageError("pass --workdir=DIR of a training run (or --baselines)")
        results = evaluate_workdir(FLAGS.workdir)
    logging.info("results: %s", results)
    print(json.dumps(results, indent=2, sort_keys=True))


def run():
    """Console-script entry point ``jaxcl-eval``."""
    # Before JAX starts its CPU backend, which reads XLA_FLAGS once.
    xla_defaults.apply_cpu_defaults()
    flags.DEFINE_string("workdir", None, "Directory of a jaxcl training run.")
    flags.DEFINE_bool("baselines", False, "Only the raw-pixel and random-encoder probes.")
    config_flags.DEFINE_config_file(
        "config", None, "Training config file (with --baselines).", lock_config=True
    )
    app.run(_main)


if __name__ == "__main__":
    run()
