"""A whole run: train, evaluate, plot and write ``results.json``.

The top of the run layer, and the entry point of the CLI (``python -m
jaxcl.main``) and of notebooks: ``train_and_evaluate(config, workdir)``.
``evaluate_workdir`` re-evaluates a finished run (``python -m jaxcl.eval``),
``evaluate_init_from`` evaluates imported weights without training.
"""

from __future__ import annotations

import jax
import ml_collections

from jaxcl import baseline_probes, console, plots, workdir_identity, workdir_io
from jaxcl.config import ConfigError
from jaxcl.evaluation import KnnMonitor, evaluate_state
from jaxcl.metric_writer import last_logged
from jaxcl.restore import restore_run
from jaxcl.train import Trainer, train

__all__ = ["evaluate_baselines", "evaluate_init_from", "evaluate_workdir", "train_and_evaluate"]


def _write_results(workdir: str, results: dict) -> None:
    workdir_io.write_json(workdir_io.resolve(workdir) / "results.json", results)


def _skipped_steps(workdir: str, summary: dict) -> int:
    """Updates skipped in the whole run: this invocation's count, else the last logged one."""
    if "skipped_steps" in summary:
        return int(summary["skipped_steps"])
    # A finished run resumed: it trained no step, its log has the count.
    return int(last_logged(workdir, "skipped_steps"))


def _finish(trainer: Trainer, state, workdir: str, provenance: dict) -> dict:
    """Evaluates a state, and on process 0 writes its plots and ``results.json``.

    ``provenance`` goes into the results, so that they say where the encoder
    came from: ``skipped_steps`` (updates dropped by ``nonfinite_loss='skip'``)
    of a training run, ``init_from`` of imported weights.
    """
    evaluation = evaluate_state(trainer, state, workdir=workdir)
    results = {**evaluation, **provenance}
    if jax.process_index() == 0:
        plots.write_run_plots(trainer.config, trainer.data, workdir, evaluation)
        _write_results(workdir, results)
    return results


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, fork: bool = False
) -> dict:
    """Trains ``config.method`` and evaluates the encoder; resumes if ``workdir`` has a run.

    Running it again on the same ``workdir`` continues from the newest
    checkpoint and yields the same parameters as an uninterrupted run (see
    ``jaxcl.train.train``). With ``config.eval.run_at_end`` the encoder is then
    evaluated (``jaxcl.evaluation.evaluate_state``) and ``workdir`` gets
    ``results.json`` and the PNG plots under ``plots/``.

    Args:
      config: a training config (``configs/*.py`` or ``jaxcl.config.default_config``).
      workdir: directory for checkpoints, metrics, plots and results.
      fork: resume ``workdir``'s checkpoint under a config that differs from
        its ``config.json`` in more than the resumable keys (otherwise refused in
        one line before anything runs; see ``jaxcl.workdir_identity``).

    Returns:
      The last logged training metrics, plus the evaluation results when
      ``config.eval.run_at_end``.
    """
    # Refused before the trainer validates (and maybe prepares) any data.
    workdir_identity.check_rerun(config, workdir, fork=fork)
    trainer = Trainer(config)
    if jax.process_index() == 0:
        for line in console.header_lines(
            config,
            total_steps=trainer.total_steps,
            devices=jax.device_count(),
            processes=jax.process_count(),
            workdir=workdir,
            log_path=console.log_path(),
        ):
            console.say(line)
    on_log = KnnMonitor(trainer) if config.knn_every_steps > 0 else None
    result = train(trainer, workdir, on_log=on_log, fork=fork)
    results = dict(result.summary)
    if config.eval.run_at_end:
        skipped_steps = _skipped_steps(workdir, results)
        results.update(_finish(trainer, result.state, workdir, {"skipped_steps": skipped_steps}))
    return results


def evaluate_workdir(workdir: str) -> dict:
    """Restores the newest checkpoint of a run and evaluates it again.

    Writes ``results.json`` and the plots of ``workdir`` (process 0); the run's
    config and checkpoints are left as they are.

    Args:
      workdir: the ``--workdir`` of a training run.

    Returns:
      The evaluation results (see ``jaxcl.evaluation.evaluate_state``).
    """
    run = restore_run(workdir)
    console.open_log_file()  # a run of its own: its log.txt may take this evaluation's lines
    return _finish(run.trainer, run.state, workdir, {"skipped_steps": _skipped_steps(workdir, {})})


def evaluate_init_from(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Evaluates the encoder of ``config.init_from`` as it is, training nothing.

    The linear evaluation of published weights (``jaxcl.weights``) or of another
    run's encoder on this config's dataset, with this config's evaluation
    protocol: the same ``evaluate_state`` a training run ends with, on a fresh
    state whose encoder is ``init_from``'s. ``workdir`` gets ``config.json``,
    ``results.json`` (with ``init_from``) and the plots.

    Args:
      config: a training config whose ``init_from`` names the weights.
      workdir: a new directory, or one this same evaluation wrote.

    Returns:
      The evaluation results (see ``jaxcl.evaluation.evaluate_state``).

    Raises:
      ConfigError: ``init_from`` is empty or does not exist.
      WorkdirMismatchError: ``workdir`` holds a training run or another evaluation.
    """
    if not config.init_from:
        raise ConfigError(
            "init_from", "", "names no weights to evaluate",
            "pass --config.init_from=PATH (a PyTorch file, a TF checkpoint or a run's workdir)",
        )  # fmt: skip
    # A training run's results and checkpoints are never overwritten by this.
    if (workdir_io.resolve(workdir) / "checkpoints").exists():
        raise workdir_identity.WorkdirMismatchError(
            f"--workdir={workdir} holds a training run; evaluate init_from in a new --workdir"
        )
    workdir_identity.check_rerun(config, workdir)
    trainer = Trainer(config)
    state = trainer.with_encoder_from(trainer.initial_state(), config.init_from)
    if jax.process_index() == 0:
        workdir_identity.store_config(config, workdir, forked=False)
    console.open_log_file()
    return _finish(trainer, state, workdir, {"init_from": config.init_from})


def evaluate_baselines(config: ml_collections.ConfigDict) -> dict:
    """The raw-pixel and random-encoder linear probes of a config; trains nothing.

    Args:
      config: a training config (dataset, encoder, evaluation settings).

    Returns:
      ``{'baseline_raw_pixels_top1', 'baseline_random_encoder_top1'}``.
    """
    return baseline_probes.baselines(Trainer(config))
