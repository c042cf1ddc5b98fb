"""SimCLR's semi-supervised claim on a pretrained run: fine-tuned vs from scratch vs linear.

    python -m jaxcl.experiments.semi_supervised --pretrained=runs/simclr_fashion_mnist \
        --workdir=runs/semi_supervised --fractions=0.01,0.1 --seeds=0,1

For each label fraction and seed (the seed draws the labelled subset and
seeds the fine-tuning), on the same class-balanced subset:

* **fine-tuned**: the pretrained encoder trained end to end
  (``jaxcl.finetuning``, recipe ``configs/finetune/simclr_fashion_mnist.py``);
* **from scratch**: the same network, recipe and steps from a random
  initialisation;
* **linear**: a linear probe on the pretrained encoder's frozen features of
  the subset (the run's ``config.eval`` probe, for ``--probe_steps`` steps).

Every score is top-1 on the whole test split. Writes ``semi_supervised.json``
and ``semi_supervised.md`` (a Markdown table) into the workdir; each run's own
workdir is under it, so a rerun resumes or skips what is done.
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
from absl import app, flags

from jaxcl import data, run_probes, xla_defaults
from jaxcl.configs.finetune import simclr_fashion_mnist as finetune_recipe
from jaxcl.features import LabelledFeatures
from jaxcl.finetuning import finetune_and_evaluate
from jaxcl.restore import restore_run

__all__ = ["linear_on_subset", "markdown_table", "run_table"]


def _recipe(fraction: float, seed: int, overrides: dict):
    recipe = finetune_recipe.get_config("" if fraction <= 0.05 else "10")
    recipe.label_fraction, recipe.subset_seed, recipe.seed = fraction, seed, seed
    for key, value in overrides.items():
        recipe[key] = value
    return recipe


def _finetuned(recipe, workdir: str, pretrained: str) -> dict:
    results_path = os.path.join(workdir, "results.json")
    if os.path.exists(results_path):
        with open(results_path, encoding="utf-8") as file:
            return json.load(file)
    return finetune_and_evaluate(recipe, workdir, pretrained=pretrained)


def linear_on_subset(run, train: LabelledFeatures, test: LabelledFeatures, subset, steps: int):
    """Test top-1 of the run's linear probe fitted on ``subset`` of the train features.

    Args:
      run: a `jaxcl.restore.RestoredRun` (its ``config.eval`` probe settings).
      train, test: features of the evaluation train and test splits.
      subset: indices of the labelled examples in ``train``.
      steps: optimisation steps of the probe (its epochs follow from the subset size).

    Returns:
      The probe's test top-1.
    """
    trainer = run.trainer
    labelled = LabelledFeatures(train.features[subset], train.labels[subset])
    batch = min(trainer.config.eval.linear_batch_size, len(subset))
    epochs = max(1, round(steps * batch / len(subset)))
    config = trainer.config
    config.unlock()
    config.eval.linear_epochs = epochs
    config.lock()
    return float(run_probes.linear_probe(trainer, labelled, test)["linear_top1"])


def run_table(pretrained, workdir, fractions, seeds, *, probe_steps=3000, overrides=None):
    """Fine-tuned, from-scratch and linear top-1 at each label fraction and seed.

    Returns:
      One row per (fraction, seed): ``fraction``, ``seed``, ``labelled_examples``,
      ``finetuned_top1``, ``scratch_top1``, ``linear_top1`` and the two runs' seconds.
    """
    overrides = overrides or {}
    run = restore_run(pretrained)
    variables = run.trainer.encoder_variables(run.state)
    spec = run.trainer.data
    train = run_probes.split_features(run.trainer, variables, spec.eval_train_split)
    test = run_probes.split_features(run.trainer, variables, spec.eval_test_split)
    rows = []
    for fraction in fractions:
        for seed in seeds:
            recipe = _recipe(fraction, seed, overrides)
            name = f"{fraction:g}_seed{seed}"
            start = time.perf_counter()
            finetuned = _finetuned(recipe, os.path.join(workdir, f"finetuned_{name}"), pretrained)
            # The same network as the pretrained run's, from a random initialisation.
            recipe.base_config = pretrained
            scratch = _finetuned(recipe, os.path.join(workdir, f"scratch_{name}"), "")
            subset = data.class_balanced_subset(train.labels, fraction=fraction, seed=seed)
            rows.append(
                {
                    "fraction": fraction,
                    "seed": seed,
                    "labelled_examples": finetuned["labelled_examples"],
                    "steps": finetuned["steps"],
                    "finetuned_top1": finetuned["finetune_top1"],
                    "scratch_top1": scratch["finetune_top1"],
                    "linear_top1": linear_on_subset(run, train, test, subset, probe_steps),
                    "finetuned_seconds": finetuned["train_seconds"],
                    "scratch_seconds": scratch["train_seconds"],
                    "wall_seconds": time.perf_counter() - start,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table, top-1 in percent, with the fine-tuned margin."""
    lines = [
        "| labels | seed | steps | fine-tuned | from scratch | linear probe | margin |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        margin = 100 * (row["finetuned_top1"] - row["scratch_top1"])
        lines.append(
            f"| {100 * row['fraction']:g}% ({row['labelled_examples']}) | {row['seed']} | "
            f"{row['steps']} | {100 * row['finetuned_top1']:.2f} | "
            f"{100 * row['scratch_top1']:.2f} | {100 * row['linear_top1']:.2f} | "
            f"{margin:+.2f} |"
        )
    return "\n".join(lines) + "\n"


FLAGS = flags.FLAGS
flags.DEFINE_string("pretrained", None, "Workdir of the pretraining run.")
flags.DEFINE_string("workdir", None, "Directory for the runs and the table.")
flags.DEFINE_list("fractions", ["0.01", "0.1"], "Label fractions.")
flags.DEFINE_list("seeds", ["0", "1"], "Seeds (labelled subset and fine-tuning).")
flags.DEFINE_integer("probe_steps", 3000, "Steps of the linear probe on each subset.")
flags.DEFINE_integer("num_steps", 0, "Fine-tuning steps (0: the recipe's epochs).")
flags.DEFINE_integer("global_batch_size", 0, "Fine-tuning batch (0: the recipe's).")


def _main(argv):
    del argv
    overrides = {"progress_bar": False}
    for key in ("num_steps", "global_batch_size"):
        if FLAGS[key].value:
            overrides[key] = FLAGS[key].value
    rows = run_table(
        FLAGS.pretrained,
        FLAGS.workdir,
        [float(f) for f in FLAGS.fractions],
        [int(s) for s in FLAGS.seeds],
        probe_steps=FLAGS.probe_steps,
        overrides=overrides,
    )
    if jax.process_index() == 0:
        os.makedirs(FLAGS.workdir, exist_ok=True)
        with open(os.path.join(FLAGS.workdir, "semi_supervised.json"), "w") as file:
            json.dump(rows, file, indent=2)
        table = markdown_table(rows)
        with open(os.path.join(FLAGS.workdir, "semi_supervised.md"), "w") as file:
            file.write(table)
        print(table)
        margins = np.array([r["finetuned_top1"] - r["scratch_top1"] for r in rows])
        print(f"fine-tuned - scratch: {100 * margins.mean():+.2f} points on average")


def run():
    """Entry point (``python -m jaxcl.experiments.semi_supervised``)."""
    xla_defaults.apply_cpu_defaults()
    flags.mark_flags_as_required(["pretrained", "workdir"])
    app.run(_main)


if __name__ == "__main__":
    run()
