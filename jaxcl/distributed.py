"""Devices, processes and the data-parallel mesh.

jaxcl runs one program on every device of every process (jax.distributed's
multi-controller model, the runtime of TPU pods and GPU clusters). The batch is
split over one mesh axis, ``'data'``, that spans all devices of all processes.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "DATA_AXIS",
    "data_mesh",
    "initialize",
    "is_main_process",
    "prefetch_to_mesh",
    "replicate",
]

DATA_AXIS = "data"


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids=None,
) -> None:
    """Starts ``jax.distributed`` when this is one process of several.

    With explicit arguments they are used as given (CPU clusters, localhost
    tests, GPU nodes without a scheduler). Without arguments JAX auto-detects
    TPU pods, SLURM and Open MPI; on a single machine with nothing to detect
    this does nothing. On CPU the collectives run over gloo.

    Args:
      coordinator_address: ``host:port`` of process 0.
      num_processes: total number of processes.
      process_id: this process's index.
      local_device_ids: devices of this host this process uses (GPU clusters).
    """
    if jax.distributed.is_initialized():
        return
    # Cross-process collectives on CPU go over gloo (JAX's CPU client reads this
    # when the backend starts, so it must be set before any JAX computation). It
    # applies only once jax.distributed is up; GPU and TPU use their own.
    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    explicit = coordinator_address is not None or num_processes is not None
    if explicit:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            local_device_ids=local_device_ids,
        )
    else:
        try:
            jax.distributed.initialize()
        except ValueError as error:
            # Nothing to auto-detect ("coordinator_address should be defined"):
            # a plain single-process run. Other failures (a detected cluster
            # whose coordinator cannot be reached) propagate: swallowing them
            # would let every process train alone into the same workdir.
            logging.debug("jax.distributed not started: %s", error)
            return
    if jax.process_count() > 1 and jax.default_backend() == "cpu":
        _connect_cpu_collectives()


def _connect_cpu_collectives() -> None:
    """Runs one collective over every device while all processes start together.

    gloo connects the processes when a group of devices first runs a
    collective, and gives up after 30 s if a peer has not arrived (measured:
    ``Gloo context initialization failed: DEADLINE_EXCEEDED``). Left to the
    first train step, that wait is the skew between the processes' compile
    times, which on a loaded machine exceeds 30 s: one process fails and the
    other waits for it forever. Connected here, right after
    ``jax.distributed.initialize`` (a barrier), later collectives over the same
    devices reuse the connection and wait for a late peer as long as it takes
    (measured with a 70 s skew).
    """
    mesh = data_mesh()
    ones = jax.make_array_from_process_local_data(
        NamedSharding(mesh, P(DATA_AXIS)), np.ones(jax.local_device_count(), np.float32)
    )
    total = jax.jit(lambda x: x.sum(), out_shardings=NamedSharding(mesh, P()))(ones)
    devices = int(np.asarray(total.addressable_shards[0].data))
    if devices != jax.device_count():
        raise RuntimeError(
            f"the first collective over all devices summed {devices} ones, not "
            f"{jax.device_count()}; check that every process was started alike"
        )


def is_main_process() -> bool:
    """True on process 0, the one that logs, shows progress and writes summaries."""
    return jax.process_index() == 0


def data_mesh() -> jax.sharding.Mesh:
    """A one-axis mesh named ``'data'`` over every device of every process."""
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,))


def replicate(tree, mesh: jax.sharding.Mesh):
    """Places every leaf of ``tree`` fully replicated on ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def global_batch(local_batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict:
    """Assembles process-local batches into global arrays sharded over ``'data'``."""
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    return {
        name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
        for name, value in local_batch.items()
    }


def prefetch_to_mesh(
    iterator: Iterator[dict], mesh: jax.sharding.Mesh, *, size: int = 2, keys=None
) -> Iterator[dict]:
    """Moves batches onto the mesh in a background thread, ``size`` ahead.

    The host pipeline, the transfer and the train step then overlap, so a step
    never waits for input unless the pipeline is slower than the step.

    Args:
      iterator: host batches (dicts of NumPy arrays, process-local).
      mesh: the data mesh.
      size: how many batches to keep in flight.
      keys: the entries to transfer (default: all).

    Yields:
      Dicts of global ``jax.Array`` sharded over ``'data'``.
    """
    buffer: queue.Queue = queue.Queue(maxsize=size)
    sentinel = object()
    stop = threading.Event()

    def put(item) -> bool:
        # A bounded wait, so the thread ends once the consumer has gone away.
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for batch in iterator:
                if keys is not None:
                    batch = {k: batch[k] for k in keys}
                if not put(global_batch(batch, mesh)):
                    return
        except BaseException as error:  # re-raised in the consumer
            put(error)
            return
        put(sentinel)

    thread = threading.Thread(target=produce, daemon=True, name="prefetch_to_mesh")
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is sentinel:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        # Let the thread leave TensorFlow before the caller moves on: a process
        # that exits while the thread is inside tf.data aborts.
        thread.join(timeout=60)
