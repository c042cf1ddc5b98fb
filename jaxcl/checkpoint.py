"""One wrapper over orbax's CheckpointManager for the whole train state.

Saves are asynchronous (training continues while the arrays are written) and
atomic: orbax writes into a temporary directory and renames it when complete,
so a crash mid-save leaves the previous checkpoint as the latest one, and old
checkpoints are deleted only after a newer one is complete. Restores go into an
abstract target that carries shardings, so a checkpoint written on one device or
process count restores on another.

A checkpoint that cannot be read (truncated or missing files, a failed disk) is
reported with a warning and the next older one is used. Training sets the
unreadable ones aside under ``workdir/checkpoints_unreadable`` (kept, not
deleted: the failure may have been a transient read error) so that they neither
shadow the step when it is saved again nor count towards ``max_to_keep``.
"""

from __future__ import annotations

import logging

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jaxcl import workdir_io

__all__ = ["Checkpointer", "UnreadableCheckpointError", "abstract_like"]


class UnreadableCheckpointError(RuntimeError):
    """Checkpoints exist but none of them can be restored into the given state."""


def _one_line(error: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of an error, shortened (TensorStore errors span kilobytes)."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if len(message) > limit:
        message = message[: limit - 3] + "..."
    return f"{type(error).__name__}: {message}"


def abstract_like(tree, sharding=None):
    """ShapeDtypeStructs of ``tree`` with ``sharding`` (default: each leaf's own)."""

    def to_abstract(leaf):
        leaf_sharding = sharding if sharding is not None else getattr(leaf, "sharding", None)
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf_sharding)

    return jax.tree.map(to_abstract, tree)


def _sync_processes(name: str) -> None:
    """Waits for every process (process 0 alone changes the directory)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


class Checkpointer:
    """Saves and restores train states under ``workdir/checkpoints``.

    Args:
      workdir: the run directory.
      max_to_keep: how many recent checkpoints to keep; older ones are deleted
        only after a newer one is complete.
      async_save: write in the background (``wait`` blocks until done).
      cleanup_tmp: delete the temporary directories of saves that never
        completed (a killed run) on start. Only for the process that trains:
        a reader running beside it would delete the save in progress.
    """

    def __init__(
        self,
        workdir: str,
        *,
        max_to_keep: int = 2,
        async_save: bool = True,
        cleanup_tmp: bool = False,
    ):
        # epath paths: orbax writes local and gs:// directories alike.
        self.directory = workdir_io.resolve(workdir) / "checkpoints"
        self.unreadable_directory = workdir_io.resolve(workdir) / "checkpoints_unreadable"
        if cleanup_tmp:
            self._remove_unfinished_saves()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        # One unnamed item, fixed here. Left to infer it, orbax locks the mode in
        # from the first step directory it reads, so one damaged directory (an
        # empty one, say) would make every other checkpoint unreadable too.
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
        )

    def _remove_unfinished_saves(self) -> None:
        # orbax's own cleanup_tmp_directories runs in a thread that is only
        # awaited by the next save, and fails if the manager is closed first.
        if jax.process_index() == 0 and self.directory.is_dir():
            for path in sorted(self.directory.iterdir()):
                if ocp.step.TMP_DIR_SUFFIX in path.name:
                    path.rmtree(missing_ok=True)
                    logging.warning("removed %s, a save that never completed", path.name)
        _sync_processes("jaxcl_checkpoint_cleanup")

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of all complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def saving(self) -> bool:
        """Whether an asynchronous save is still running (``wait`` blocks until not).

        ``all_steps`` and ``latest_step`` list a step as soon as its save starts;
        while this is True the newest of them may not be on disk yet.
        """
        return self._manager.is_saving_in_progress()

    def save(self, step: int, state, *, force: bool = False) -> bool:
        """Starts saving ``state`` as checkpoint ``step``; returns whether it saves.

        Saving a step that already exists is a no-op (e.g. the final save right
        after a periodic one).
        """
        if step in self._manager.all_steps():
            return False
        return self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

    def restore(
        self, abstract_state, step: int | None = None, *, set_aside_unreadable: bool = False
    ):
        """Restores checkpoint ``step`` (default: the newest readable one).

        Without ``step``, checkpoints are tried newest first; each unreadable one
        is reported with a warning naming the step and the error, and the next
        older one is tried.

        Args:
          abstract_state: a pytree of ``jax.ShapeDtypeStruct`` with shardings,
            the structure to restore into (see ``abstract_like``).
          step: a specific step, or None for the newest readable one.
          set_aside_unreadable: move the unreadable checkpoints newer than the
            restored one to ``checkpoints_unreadable/`` (what training wants:
            they would otherwise stay "latest" and block saving their step).

        Returns:
          ``(step, state)``, or ``(None, None)`` when there is no checkpoint.

        Raises:
          UnreadableCheckpointError: checkpoints exist but none is readable,
            e.g. they were written by a different config. Starting afresh would
            let ``max_to_keep`` delete them, so this is an error.
        """
        if step is not None:
            return step, self._restore(step, abstract_state)
        steps = sorted(self._manager.all_steps(), reverse=True)
        unreadable = []
        for candidate in steps:
            try:
                state = self._restore(candidate, abstract_state)
            except Exception as error:  # a damaged checkpoint must not stop the run
                unreadable.append((candidate, _one_line(error)))
                logging.warning(
                    "checkpoint %d in %s is unreadable (%s); trying an older one",
                    candidate,
                    self.directory,
                    unreadable[-1][1],
                )
                continue
            if unreadable and set_aside_unreadable:
                self._set_aside([bad for bad, _ in unreadable])
            return candidate, state
        if unreadable:
            newest, reason = unreadable[0]
            raise UnreadableCheckpointError(
                f"none of the checkpoints {steps} in {self.directory} is readable "
                f"(step {newest}: {reason}); if the config changed since they were "
                "written, train in a new --workdir, else move the directory away."
            )
        return None, None

    def _restore(self, step: int, abstract_state):
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def _set_aside(self, steps: list[int]) -> None:
        """Moves the directories of ``steps`` out of the manager's sight."""
        if jax.process_index() == 0:
            self.unreadable_directory.mkdir(parents=True, exist_ok=True)
            for step in steps:
                target = self.unreadable_directory / str(step)
                suffix = 1
                while target.exists():  # the same step failed before
                    target = self.unreadable_directory / f"{step}.{suffix}"
                    suffix += 1
                (self.directory / str(step)).rename(target)
                logging.warning("moved unreadable checkpoint %d to %s", step, target)
        _sync_processes("jaxcl_checkpoint_set_aside")
        self._manager.reload()

    def wait(self) -> None:
        """Blocks until background saves are complete."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
