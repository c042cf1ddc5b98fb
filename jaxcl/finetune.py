"""Command line: ``python -m jaxcl.finetune --pretrained=RUN --workdir=DIR [--config=...]``.

Fine-tunes the encoder of the pretraining run in ``--pretrained`` (or of a
published PyTorch or TensorFlow weights file there, for the network of
``--config.base_config``) on a labelled subset
(``--config.label_fraction=0.01``), or trains the same network from scratch
when ``--pretrained=`` is empty; writes ``DIR/results.json`` with
``finetune_top1`` and ``label_fraction``. The work is
``jaxcl.finetuning.finetune_and_evaluate``; rerunning the command resumes.
"""

from __future__ import annotations

import os

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from jaxcl import cli, console, distributed, xla_defaults
from jaxcl.configs import finetune as finetune_recipes
from jaxcl.finetuning import finetune_and_evaluate

_DEFAULT_RECIPE = os.path.join(
    os.path.dirname(finetune_recipes.__file__), "simclr_fashion_mnist.py"
)


def _define_flags():
    config_flags.DEFINE_config_file(
        "config",
        _DEFAULT_RECIPE,
        "Fine-tuning recipe file, e.g. configs/finetune/simclr_fashion_mnist.py[:10].",
        lock_config=True,
    )
    flags.DEFINE_string(
        "pretrained",
        None,
        "Workdir of the pretraining run, or a PyTorch file or TF checkpoint of the "
        "encoder of --config.base_config; empty: train from scratch.",
    )
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
    flags.DEFINE_string(
        "compilation_cache_dir",
        xla_defaults.DEFAULT_COMPILATION_CACHE,
        "JAX's persistent compilation cache; '' = off.",
    )
    flags.DEFINE_bool("fork", False, "Resume the workdir's checkpoint under another config.")
    cli.define_traceback_flag()
    flags.mark_flags_as_required(["pretrained", "workdir"])


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    # As jaxcl.main: library logs to WORKDIR/log.txt (opened once the run is
    # accepted), jaxcl's lines and the progress bar on the screen.
    routing = console.route_logs(verbose=console.verbose_requested(FLAGS["verbosity"].present))
    xla_defaults.enable_compilation_cache(FLAGS.compilation_cache_dir)
    distributed.initialize()
    routing.write_to(FLAGS.workdir, jax.process_index())
    if not distributed.is_main_process():
        logging.set_verbosity(logging.WARNING)
    results = finetune_and_evaluate(
        FLAGS.config, FLAGS.workdir, pretrained=FLAGS.pretrained, fork=FLAGS.fork
    )
    if distributed.is_main_process():
        source = FLAGS.pretrained or "from scratch"
        print(
            f"fine-tuned ({source}) on {results['labelled_examples']} labelled examples "
            f"({100 * results['label_fraction']:.2f}%): test top-1 "
            f"{100 * results['finetune_top1']:.2f}%; results in {FLAGS.workdir}/results.json"
        )


def run():
    """Console-script entry point ``jaxcl-finetune``."""
    xla_defaults.apply_cpu_defaults()  # before JAX starts its CPU backend
    # Before the flags load a config file, which may import TensorFlow (its C++
    # INFO lines, e.g. oneDNN's on AVX-512 CPUs, would precede one-line errors).
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _define_flags()
    app.run(
        cli.report_user_errors("jaxcl.finetune", _main),
        flags_parser=cli.parse_flags("jaxcl.finetune"),
    )


if __name__ == "__main__":
    run()
