"""Rebuilding a run from its workdir: ``config.json`` + the newest checkpoint.

The one place that turns a finished (or running) run back into a trainer and a
train state, for the evaluation CLI, ``load_encoder``, the benchmarks and the
tests. It reads the workdir and writes nothing to it.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections

from jaxcl.checkpoint import Checkpointer
from jaxcl.config import load_config
from jaxcl.train import Trainer, TrainState

__all__ = ["RestoredRun", "restore_run"]


@dataclasses.dataclass
class RestoredRun:
    """A run as it was saved.

    Attributes:
      config: the run's config (``workdir/config.json`` on today's defaults).
      trainer: ``Trainer(config)``.
      state: the restored train state, replicated on the trainer's mesh.
      step: the checkpoint's step.
    """

    config: ml_collections.ConfigDict
    trainer: Trainer
    state: TrainState
    step: int


def restore_run(
    workdir: str,
    *,
    step: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    check_data_files: bool = True,
) -> RestoredRun:
    """Restores the newest readable checkpoint (or ``step``) of the run in ``workdir``.

    Args:
      workdir: the ``--workdir`` of a ``jaxcl.main`` run.
      step: a checkpoint step; None for the newest readable one.
      mesh: the data mesh to restore onto (default: every device); any device
        or process count works, whatever the run trained on.
      check_data_files: require the run's dataset on this machine (False when
        only the encoder is wanted: ``load_encoder``, ``jaxcl.export``).

    Returns:
      A ``RestoredRun``.

    Raises:
      FileNotFoundError: ``workdir`` holds no config or no checkpoint.
    """
    config = load_config(workdir)
    trainer = Trainer(config, mesh, check_data_files=check_data_files)
    checkpointer = Checkpointer(workdir)
    try:
        restored_step, state = checkpointer.restore(trainer.abstract_state(), step=step)
    finally:
        checkpointer.close()
    if state is None:
        raise FileNotFoundError(
            f"no checkpoint in {checkpointer.directory}; train first with "
            f"python -m jaxcl.main --config=... --workdir={workdir}"
        )
    return RestoredRun(config, trainer, state, restored_step)
