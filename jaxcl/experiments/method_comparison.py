"""Every method on Fashion-MNIST at an equal budget: one table, one plot.

    python -m jaxcl.experiments.method_comparison --workdir=runs/comparison --num_epochs=1

Trains SimCLR, MoCo v2, MoCo v3, Align-Uniform, alpha-CL, the quadratic loss
and SupCon (the supervised reference) from ``configs/simclr_fashion_mnist.py``
with the same encoder, batch, augmentations, optimizer and number of steps;
only the method and its own config section change. Each run is evaluated with the
same offline linear probe and weighted kNN, and the alignment and uniformity of
its test features are measured. Writes ``comparison.json``, ``comparison.md``
(a Markdown table) and ``alignment_uniformity.png`` into the workdir.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags

from jaxcl import configs, xla_defaults
from jaxcl.run import train_and_evaluate
from jaxcl.theory.align_uniform import plot_alignment_uniformity as plot_alignment_uniformity_plane

# Each method's section at this scale (dotted keys), plus MoCo v3's heads; the
# other hyper-parameters are shared.
METHOD_SETTINGS = {
    "simclr": {"simclr.temperature": 0.2},
    "mocov2": {
        "mocov2.temperature": 0.2,
        "mocov2.queue_size": 4096,
        "mocov2.momentum_encoder_decay": 0.99,
    },
    "mocov3": {
        "mocov3.temperature": 0.2,
        "mocov3.momentum_encoder_decay": 0.99,
        "mocov3.predictor_hidden_dim": 512,
        "projector": "mocov3_projector",
        "projection_hidden_dim": 512,
    },
    "align_uniform": {},
    "alpha_cl": {"alpha_cl.temperature": 0.5, "alpha_cl.alpha_type": "exp"},
    "quadratic": {},
    "supcon": {"supcon.temperature": 0.1},
}


def base_config():
    """``configs/simclr_fashion_mnist.py``'s config, the shared recipe."""
    return configs.get_config("simclr_fashion_mnist")


def run_method(method: str, workdir: str, *, num_epochs: float, overrides: dict) -> dict:
    """Trains and evaluates one method; returns its results plus wall time.

    ``overrides`` are dotted config keys (``{"seed": 1, "simclr.temperature": 0.5}``).
    """
    config = base_config()
    config.method = method
    for key, value in {**METHOD_SETTINGS[method], **overrides}.items():
        *sections, name = key.split(".")
        target = config
        for section in sections:
            target = target[section]
        target[name] = value
    config.num_epochs = num_epochs
    config.eval.baselines = False
    started = time.perf_counter()
    results = train_and_evaluate(config, os.path.join(workdir, method))
    results["wall_seconds"] = time.perf_counter() - started
    results["method"] = method
    return results


def plot_alignment_uniformity(rows: list[dict], out: str) -> None:
    """One point per method in the (uniformity, alignment) plane, coloured by accuracy."""
    records = [
        {
            "name": r["method"],
            "alignment": r["alignment"],
            "uniformity": r["uniformity"],
            "accuracy": r["linear_top1"],
        }
        for r in rows
    ]
    plot_alignment_uniformity_plane(
        records, out, title="Fashion-MNIST, equal budget: alignment vs uniformity"
    )


def markdown_table(rows: list[dict]) -> str:
    """The comparison as a Markdown table."""
    lines = [
        "| method | linear top-1 | kNN top-1 | alignment | uniformity | wall time |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {100 * r['linear_top1']:.2f}% | {100 * r['knn_top1']:.2f}% "
            f"| {r['alignment']:.3f} | {r['uniformity']:.3f} | {r['wall_seconds'] / 60:.1f} min |"
        )
    return "\n".join(lines) + "\n"


FLAGS = flags.FLAGS


def _main(argv):
    del argv
    os.makedirs(FLAGS.workdir, exist_ok=True)
    overrides = json.loads(FLAGS.overrides) if FLAGS.overrides else {}
    path = os.path.join(FLAGS.workdir, "comparison.json")
    rows = []
    if os.path.exists(path):  # resume: keep finished methods
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)
    done = {r["method"] for r in rows}
    for method in FLAGS.methods:
        if method in done:
            continue
        rows.append(
            run_method(method, FLAGS.workdir, num_epochs=FLAGS.num_epochs, overrides=overrides)
        )
        with open(path, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    with open(os.path.join(FLAGS.workdir, "comparison.md"), "w", encoding="utf-8") as f:
        f.write(markdown_table(rows))
    plot_alignment_uniformity(rows, os.path.join(FLAGS.workdir, "alignment_uniformity.png"))
    print(markdown_table(rows))


if __name__ == "__main__":
    xla_defaults.apply_cpu_defaults()  # before JAX starts its CPU backend
    flags.DEFINE_string("workdir", None, "Directory for the runs and the table.")
    flags.DEFINE_float("num_epochs", 1.0, "Training epochs of every method (the budget).")
    flags.DEFINE_list("methods", list(METHOD_SETTINGS), "Methods to compare.")
    flags.DEFINE_string("overrides", "", 'JSON of config overrides, e.g. {"seed": 1}')
    flags.mark_flag_as_required("workdir")
    app.run(_main)
