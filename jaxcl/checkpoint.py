"""One wrapper over orbax's CheckpointManager for the whole train state.

Saves are asynchronous (training continues while the arrays are written) and
atomic: orbax writes into a temporary directory and renames it when complete,
so a crash mid-save leaves the previous checkpoint as the latest one. Restores
go into an abstract target that carries shardings, so a checkpoint written on
one device or process count restores on another.
"""

from __future__ import annotations

import logging
import os

import jax
import orbax.checkpoint as ocp

__all__ = ["Checkpointer", "abstract_like"]


def abstract_like(tree, sharding=None):
    """ShapeDtypeStructs of ``tree`` with ``sharding`` (default: each leaf's own)."""

    def to_abstract(leaf):
        leaf_sharding = sharding if sharding is not None else getattr(leaf, "sharding", None)
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf_sharding)

    return jax.tree.map(to_abstract, tree)


class Checkpointer:
    """Saves and restores train states under ``workdir/checkpoints``.

    Args:
      workdir: the run directory.
      max_to_keep: how many recent checkpoints to keep; older ones are deleted
        only after a newer one is complete.
      async_save: write in the background (``wait`` blocks until done).
    """

    def __init__(self, workdir: str, *, max_to_keep: int = 2, async_save: bool = True):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of all complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, *, force: bool = False) -> bool:
        """Starts saving ``state`` as checkpoint ``step``; returns whether it saves.

        Saving a step that already exists is a no-op (e.g. the final save right
        after a periodic one).
        """
        if step in self._manager.all_steps():
            return False
        return self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

    def restore(self, abstract_state, step: int | None = None):
        """Restores checkpoint ``step`` (default: the newest readable one).

        Args:
          abstract_state: a pytree of ``jax.ShapeDtypeStruct`` with shardings,
            the structure to restore into (see ``abstract_like``).
          step: a specific step, or None for the newest.

        Returns:
          ``(step, state)``, or ``(None, None)`` when there is no checkpoint.
        """
        steps = [step] if step is not None else sorted(self._manager.all_steps(), reverse=True)
        for candidate in steps:
            try:
                state = self._manager.restore(
                    candidate, args=ocp.args.StandardRestore(abstract_state)
                )
            except Exception as error:  # a corrupt checkpoint must not stop the run
                if step is not None:
                    raise
                logging.warning(
                    "checkpoint %d in %s is unreadable (%s: %s); trying an older one",
                    candidate,
                    self.directory,
                    type(error).__name__,
                    str(error).splitlines()[0] if str(error) else "",
                )
                continue
            return candidate, state
        return None, None

    def wait(self) -> None:
        """Blocks until background saves are complete."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for saves and releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
