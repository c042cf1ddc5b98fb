"""Command line for evaluation: ``python -m jaxcl.eval --workdir=DIR``.

Restores the newest checkpoint of ``DIR``, extracts frozen encoder features of
the evaluation splits, and writes ``DIR/results.json`` with the linear
evaluation top-1 (``linear_top1``), the weighted-kNN top-1 (``knn_top1``) and
the alignment and uniformity of the test features (Wang & Isola 2020), plus the
plots. ``python -m jaxcl.eval --config=configs/X.py --baselines`` prints the two
linear-probe baselines of a config (raw pixels, the random encoder) instead.

Transfer: ``python -m jaxcl.eval --workdir=DIR --dataset=NAME`` scores the
run's encoder on another dataset (``--dataset_options`` as JSON, ``--data_dir``,
``--eval_train_split``/``--eval_test_split``) and writes
``DIR/transfer/NAME/results.json``; see ``jaxcl.transfer``.

Imported weights: ``python -m jaxcl.eval --config=configs/X.py
--config.init_from=PATH --workdir=NEW_DIR`` evaluates the encoder in ``PATH`` (a
PyTorch file, a SimCLR TF checkpoint or a run's workdir) on the config's
dataset with its evaluation protocol, training nothing; see
``jaxcl.run.evaluate_init_from``.
"""

from __future__ import annotations

import json

from absl import app, flags, logging
from ml_collections import config_flags

from jaxcl import cli, console, xla_defaults
from jaxcl.run import evaluate_baselines, evaluate_init_from, evaluate_workdir
from jaxcl.transfer import evaluate_transfer


def _dataset_options(text: str) -> dict:
    """``--dataset_options`` as a dict, or a one-line usage error."""
    try:
        options = json.loads(text or "{}")
    except json.JSONDecodeError as error:
        raise app.UsageError(f"--dataset_options={text!r} is not JSON ({error})") from None
    if not isinstance(options, dict):
        raise app.UsageError(f"--dataset_options={text!r} must be a JSON object, e.g. '{{}}'")
    return options


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
        if FLAGS.config is not None and FLAGS.dataset:
            raise app.UsageError(
                "--dataset scores a run's encoder elsewhere and takes no --config; "
                "evaluate init_from on another dataset with --config.dataset=NAME"
            )
        if FLAGS.dataset:
            results = evaluate_transfer(
                FLAGS.workdir,
                FLAGS.dataset,
                dataset_options=_dataset_options(FLAGS.dataset_options),
                data_dir=FLAGS.data_dir or None,
                eval_train_split=FLAGS.eval_train_split,
                eval_test_split=FLAGS.eval_test_split,
            )
        else:
            # Library logs go to the workdir's log.txt (opened once the run is accepted).
            routing = console.route_logs(
                verbose=console.verbose_requested(FLAGS["verbosity"].present)
            )
            routing.write_to(FLAGS.workdir, 0)
            if FLAGS.config is not None:
                # Imported weights, evaluated as a training run's encoder would be.
                results = evaluate_init_from(FLAGS.config, FLAGS.workdir)
            else:
                results = evaluate_workdir(FLAGS.workdir)
    logging.info("results: %s", results)
    print(json.dumps(results, indent=2, sort_keys=True))


def run():
    """Console-script entry point ``jaxcl-eval``."""
    # Before JAX starts its CPU backend, which reads XLA_FLAGS once.
    xla_defaults.apply_cpu_defaults()
    flags.DEFINE_string("workdir", None, "Directory of a jaxcl training run.")
    flags.DEFINE_bool("baselines", False, "Only the raw-pixel and random-encoder probes.")
    flags.DEFINE_string("dataset", "", "Transfer: evaluate the encoder on this dataset.")
    flags.DEFINE_string("dataset_options", "", "Transfer: its options, a JSON object.")
    flags.DEFINE_string("data_dir", "", "Transfer: its TFDS data directory.")
    flags.DEFINE_string("eval_train_split", "", "Transfer: the split the probes fit on.")
    flags.DEFINE_string("eval_test_split", "", "Transfer: the split they are scored on.")
    config_flags.DEFINE_config_file(
        "config",
        None,
        "Training config file: with --baselines, or with --config.init_from and --workdir.",
        lock_config=True,
    )
    cli.define_traceback_flag()
    app.run(cli.report_user_errors("jaxcl.eval", _main), flags_parser=cli.parse_flags("jaxcl.eval"))


if __name__ == "__main__":
    run()
