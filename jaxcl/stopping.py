"""When the training loop stops early: signals, and steps that went non-finite.

Two guards of the loop in ``jaxcl.train``. ``StopRequested`` turns SIGTERM and
SIGINT into a flag checked between steps (so the loop saves and exits cleanly),
``stop_agreed`` makes several processes stop at the same step, and
``NonfiniteMonitor`` keeps track of non-finite losses on the device without
making every step wait for the host.
"""

from __future__ import annotations

import contextlib
import logging
import signal

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

__all__ = [
    "NonFiniteLossError",
    "NonfiniteMonitor",
    "StopRequested",
    "kept_checkpoint",
    "stop_agreed",
]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class StopRequested:
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps.

    The loop then saves a checkpoint of the step just finished and exits with
    status 128 + the signal number. A second SIGINT (Ctrl-C again) gets Python's
    usual KeyboardInterrupt at once, for when the save itself is stuck; repeated
    SIGTERMs are ignored, because launchers often send one to each process of a
    job and to the job as a whole, and schedulers follow up with SIGKILL anyway.
    """

    def __init__(self):
        self.signal_number = None
        self._previous = {}

    def __enter__(self):
        for number in (signal.SIGTERM, signal.SIGINT):
            # Outside the main thread signals cannot be caught: leave them alone.
            with contextlib.suppress(ValueError):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame):
        # No logging here: the handler may interrupt the logging module itself.
        if self.signal_number is None:
            self.signal_number = number
        if signal.SIGINT in self._previous:
            signal.signal(signal.SIGINT, self._previous[signal.SIGINT])

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def __bool__(self):
        return self.signal_number is not None


def stop_agreed(stop: StopRequested, *, sync_point: bool) -> bool:
    """Whether the loop stops after this step.

    One process stops at the first step after a signal. Several processes must
    save the same step together, and a signal can reach them steps apart, so
    they agree (any one signalled) at log and checkpoint steps only, where the
    loop waits for the device anyway.
    """
    if jax.process_count() == 1:
        return bool(stop)
    if not sync_point:
        return False
    return bool(np.any(multihost_utils.process_allgather(np.asarray(bool(stop)))))


@jax.jit
def _fold_nonfinite(counts, finite, step):
    first_bad, bad_count, in_a_row, most_in_a_row = counts
    bad = finite == 0
    first_bad = jnp.where(bad & (first_bad < 0), step, first_bad)
    in_a_row = jnp.where(bad, in_a_row + 1, 0)
    return first_bad, bad_count + bad, in_a_row, jnp.maximum(most_in_a_row, in_a_row)


class NonfiniteMonitor:
    """The first non-finite step and the count of them, kept on the device.

    Reading ``metrics['finite']`` on the host every step would make each step
    wait for the previous one to finish, losing the overlap of host and device
    work. Instead one tiny jitted call per step (dispatched asynchronously, no
    transfer back) folds the flag into four scalars (the first bad step, the
    number of bad steps, the current and the longest run of consecutive bad
    steps), which the host reads only where it waits anyway or must: at log
    steps, before every checkpoint and on a signal. So 'raise' names the exact
    first bad step and never checkpoints a diverged state, at the cost of
    running on until the next such read.
    """

    def __init__(self, skipped_before: int = 0):
        """``skipped_before``: steps skipped before a resume (counted in ``check``)."""
        # Host values: jit places them wherever the flags are, on any mesh.
        self._counts = (np.int32(-1), np.int32(0), np.int32(0), np.int32(0))
        self._skipped_before = skipped_before
        self._warned_count = skipped_before

    def update(self, finite: jax.Array, step: int) -> None:
        """Folds in the ``finite`` flag of ``step`` (1-based, as in metrics)."""
        self._counts = _fold_nonfinite(self._counts, finite, step)

    def read(self) -> tuple[int | None, int, int]:
        """Syncs and returns (first bad step or None, bad steps, longest run of them)."""
        first_bad, bad_count, _, most_in_a_row = (int(x) for x in jax.device_get(self._counts))
        return (first_bad if first_bad >= 0 else None), bad_count, most_in_a_row

    def check(self, config, step: int, checkpointer) -> int:
        """Applies ``config.nonfinite_loss`` at a sync point; returns the steps skipped.

        The count includes those skipped before a resume.

        Syncs. 'raise' stops at any non-finite step; 'skip' stops once
        ``config.max_consecutive_skips`` updates in a row were skipped: the run
        has diverged, and its results would be those of a frozen encoder.

        Raises:
          NonFiniteLossError: naming the first bad step and the checkpoint kept.
        """
        first_bad, bad_count, most_in_a_row = self.read()
        if first_bad is None:
            return self._skipped_before
        if config.nonfinite_loss == "raise":
            raise NonFiniteLossError(
                f"non-finite loss, gradient or parameters at step {first_bad} "
                f"(noticed at step {step}); {kept_checkpoint(checkpointer)}; rerun with "
                "config.nonfinite_loss='skip', or lower config.learning_rate (with --fork "
                "or in a new --workdir)."
            )
        if most_in_a_row >= config.max_consecutive_skips:
            raise NonFiniteLossError(
                f"{most_in_a_row} updates in a row were non-finite and skipped (the first "
                f"at step {first_bad}, {bad_count} in all, noticed at step {step}): the run "
                f"diverged; {kept_checkpoint(checkpointer)}; lower config.learning_rate "
                "(with --fork or in a new --workdir), or raise config.max_consecutive_skips."
            )
        return self._skipped_before + bad_count

    def warn_if_new(self, bad_count: int, step: int) -> None:
        """Logs skipped updates once per log step that saw new ones."""
        if bad_count > self._warned_count:
            logging.warning(
                "skipped %d non-finite update(s) up to step %d (%d in all)",
                bad_count - self._warned_count,
                step,
                bad_count,
            )
            self._warned_count = bad_count


def kept_checkpoint(checkpointer) -> str:
    """Which checkpoint a stopped run leaves to resume from, in words."""
    checkpointer.wait()
    latest = checkpointer.latest_step()
    if latest is None:
        return f"no checkpoint was written to {checkpointer.directory}"
    return f"kept the last good checkpoint, step {latest}, in {checkpointer.directory}"
