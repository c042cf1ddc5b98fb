"""Where training metrics go: ``metrics.jsonl`` and TensorBoard event files."""

from __future__ import annotations

import contextlib
import json
import math
import time

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from jaxcl import workdir_io

__all__ = ["MetricsWriter", "last_logged", "read_metrics", "truncate_metrics"]


class MetricsWriter:
    """Appends one JSON object per logged step to ``workdir/metrics.jsonl``.

    Also writes TensorBoard scalars under ``workdir/tensorboard``, with
    TensorBoard's own event writer (no TensorFlow needed). Only process 0 should
    create one.

    Args:
      workdir: the run directory.
      tensorboard: also write event files.
      purge_step: the first step a resumed run logs again. TensorBoard is told
        to drop the events it already has from that step on (the event PyTorch's
        ``SummaryWriter(purge_step=...)`` writes), so a run resumed from an older
        checkpoint shows each step once, as ``truncate_metrics`` does for
        ``metrics.jsonl``.
    """

    def __init__(self, workdir: str, *, tensorboard: bool = True, purge_step: int | None = None):
        directory = workdir_io.resolve(workdir)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "metrics.jsonl"
        # epath's gs:// (TensorFlow) backend opens files as context managers only.
        self._files = contextlib.ExitStack()
        self._file = self._files.enter_context(self.path.open("a", encoding="utf-8"))
        self._events = None
        if tensorboard:
            # TensorBoard writes through tf.io.gfile, which knows gs:// too.
            self._events = EventFileWriter(str(directory / "tensorboard"))
            if purge_step is not None:
                restart = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
                self._events.add_event(
                    event_pb2.Event(
                        step=int(purge_step), wall_time=time.time(), session_log=restart
                    )
                )

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """Records ``scalars`` at ``step`` (NumPy or Python numbers)."""
        record = {"step": int(step)}
        for name, value in scalars.items():
            value = float(np.asarray(value))
            record[name] = value if math.isfinite(value) else str(value)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._events is not None:
            values = [
                summary_pb2.Summary.Value(tag=name, simple_value=float(np.asarray(value)))
                for name, value in scalars.items()
            ]
            self._events.add_event(
                event_pb2.Event(
                    step=int(step), wall_time=time.time(), summary=summary_pb2.Summary(value=values)
                )
            )

    def close(self) -> None:
        """Flushes and closes the files."""
        self._files.close()
        if self._events is not None:
            self._events.close()


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``workdir/metrics.jsonl``, in order (for plots and tests)."""
    path = workdir_io.resolve(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def last_logged(workdir: str, key: str, default=0):
    """``key`` of the last record of ``workdir/metrics.jsonl``; ``default`` if absent."""
    records = read_metrics(workdir)
    return records[-1].get(key, default) if records else default


def truncate_metrics(workdir: str, last_step: int) -> None:
    """Drops the records of ``workdir/metrics.jsonl`` after ``last_step``.

    A run resumed from the checkpoint of ``last_step`` logs the later steps
    again; without this they would appear twice. A line cut short by a killed
    process is dropped too. The file is replaced atomically, so a crash here
    leaves the old one. (TensorBoard's events are purged by the resumed run's
    ``MetricsWriter(purge_step=...)``.)
    """
    path = workdir_io.resolve(workdir) / "metrics.jsonl"
    if not path.exists():
        return
    lines = [line for line in path.read_text(encoding="utf-8").splitlines(True) if line.strip()]
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record["step"] <= last_step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if kept == lines:
        return
    workdir_io.write_bytes(path, "".join(kept).encode("utf-8"))
