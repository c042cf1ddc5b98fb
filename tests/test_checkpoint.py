"""Tests of jaxcl.checkpoint: round trips with shardings and the atomicity of saves."""

import asyncio
import os
import threading

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcl.checkpoint import Checkpointer, abstract_like

# How long the test waits for the background save to reach the blocked rename; a
# save of a few small arrays takes well under a second.
SAVE_TIMEOUT_S = 60


def small_state(offset=0.0):
    """A train-state-like pytree: float and integer leaves, nested dicts."""
    return {
        "params": {
            "kernel": jnp.arange(24.0, dtype=jnp.float32).reshape(8, 3) + offset,
            "bias": jnp.linspace(-1.0, 1.0, 3, dtype=jnp.float32) * (1.0 + offset),
        },
        "step": jnp.int32(7 + round(offset)),
    }


def assert_trees_equal(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_round_trip_restores_values_into_the_target_sharding(tmp_path, mesh):
    # Saved sharded over the 8 devices, restored replicated: the abstract target,
    # not the checkpoint, decides where the arrays go.
    state = small_state(offset=0.5)
    state["params"]["kernel"] = jax.device_put(
        state["params"]["kernel"], NamedSharding(mesh, P("data"))
    )
    checkpointer = Checkpointer(str(tmp_path))
    assert checkpointer.save(3, state)
    checkpointer.wait()
    assert not checkpointer.saving()
    assert checkpointer.all_steps() == [3]

    replicated = NamedSharding(mesh, P())
    step, restored = checkpointer.restore(abstract_like(state, replicated))
    checkpointer.close()

    assert step == 3
    assert_trees_equal(restored, state)
    for leaf in jax.tree.leaves(restored):
        assert leaf.sharding == replicated


def test_last_checkpoint_survives_until_a_newer_one_is_complete(tmp_path, monkeypatch):
    directory = os.path.join(tmp_path, "checkpoints")
    first, second = small_state(), small_state(offset=1.0)
    checkpointer = Checkpointer(str(tmp_path), max_to_keep=1)
    checkpointer.save(1, first)
    checkpointer.wait()
    assert os.listdir(directory) == ["1"]

    # Block step 2's save at its point of no return: orbax writes everything into
    # `2.orbax-checkpoint-tmp` and then finalizes it (writes commit_success.txt and
    # renames it to `2`); max_to_keep deletes step 1 only after that. Holding the
    # finalize of the step directory freezes the moment a crash is most harmful.
    # The item directory inside it (`default`) is finalized first and left alone.
    original_finalize = ocp.path.atomicity.AtomicRenameTemporaryPath.finalize
    reached, release = threading.Event(), threading.Event()

    async def blocked_finalize(self, *args, **kwargs):
        if self.get_final().name == "2":
            reached.set()
            await asyncio.to_thread(release.wait, SAVE_TIMEOUT_S)
        return await original_finalize(self, *args, **kwargs)

    monkeypatch.setattr(ocp.path.atomicity.AtomicRenameTemporaryPath, "finalize", blocked_finalize)

    try:
        assert checkpointer.save(2, second)
        assert reached.wait(SAVE_TIMEOUT_S), "the save never reached its final rename"
        assert checkpointer.saving()

        # Step 1 is still complete on disk, and the only other entry is step 2's
        # temporary directory.
        entries = sorted(os.listdir(directory))
        assert entries == ["1", f"2{ocp.step.TMP_DIR_SUFFIX}"]
        assert "commit_success.txt" in os.listdir(os.path.join(directory, "1"))

        # What a run restarted at this moment (after a crash) would see: step 1 only,
        # readable with its values.
        reader = Checkpointer(str(tmp_path))
        assert reader.all_steps() == [1]
        step, restored = reader.restore(abstract_like(first))
        reader.close()
        assert step == 1
        assert_trees_equal(restored, first)
    finally:
        release.set()  # never leave the background thread blocked, even on failure

    checkpointer.wait()
    assert not checkpointer.saving()
    assert os.listdir(directory) == ["2"]
    assert checkpointer.all_steps() == [2]
    step, restored = checkpointer.restore(abstract_like(second))
    checkpointer.close()
    assert step == 2
    assert_trees_equal(restored, second)
