"""Command line: ``python -m jaxcl.export --workdir=DIR --out=encoder.bin``.

Writes the trained encoder of a run as a ``jax.export`` artifact that loads
with JAX alone (see ``jaxcl.trained_encoder``); ``--platforms=cpu,cuda,tpu``
lowers it for several platforms at once.
"""

from __future__ import annotations

from absl import app, flags

from jaxcl import cli, xla_defaults
from jaxcl.trained_encoder import export_encoder


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    platforms = tuple(FLAGS.platforms.split(",")) if FLAGS.platforms else None
    exported = export_encoder(FLAGS.workdir, FLAGS.out, step=FLAGS.step, platforms=platforms)
    shape = exported.in_avals[0].shape
    print(f"wrote {FLAGS.out}: images {shape} -> features {exported.out_avals[0].shape}")


def run():
    """Console-script entry point ``jaxcl-export``."""
    xla_defaults.apply_cpu_defaults()
    flags.DEFINE_string("workdir", None, "Directory of a jaxcl training run.")
    flags.DEFINE_string("out", None, "File to write the serialized encoder to.")
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the newest).")
    flags.DEFINE_string("platforms", "", "Comma-separated platforms (default: this one).")
    flags.mark_flags_as_required(["workdir", "out"])
    cli.define_traceback_flag()
    app.run(
        cli.report_user_errors("jaxcl.export", _main), flags_parser=cli.parse_flags("jaxcl.export")
    )


if __name__ == "__main__":
    run()
