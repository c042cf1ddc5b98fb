"""Where training metrics go: ``metrics.jsonl`` and TensorBoard event files."""

from __future__ import annotations

import json
import math
import os

import numpy as np

__all__ = ["MetricsWriter", "read_metrics", "truncate_metrics"]


class MetricsWriter:
    """Appends one JSON object per logged step to ``workdir/metrics.jsonl``.

    Also writes TensorBoard scalars under ``workdir/tensorboard`` (through
    ``tf.summary``, which needs no TensorBoard install). Only process 0 should
    create one.

    Args:
      workdir: the run directory.
      tensorboard: also write event files.
    """

    def __init__(self, workdir: str, *, tensorboard: bool = True):
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._summary_writer = None
        if tensorboard:
            from jaxcl.data._tf import tf

            self._summary_writer = tf.summary.create_file_writer(
                os.path.join(workdir, "tensorboard")
            )

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """Records ``scalars`` at ``step`` (NumPy or Python numbers)."""
        record = {"step": int(step)}
        for name, value in scalars.items():
            value = float(np.asarray(value))
            record[name] = value if math.isfinite(value) else str(value)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._summary_writer is not None:
            from jaxcl.data._tf import tf

            with self._summary_writer.as_default(step=int(step)):
                for name, value in scalars.items():
                    tf.summary.scalar(name, float(np.asarray(value)))

    def close(self) -> None:
        """Flushes and closes the files."""
        self._file.close()
        if self._summary_writer is not None:
            self._summary_writer.close()


def read_metrics(workdir: str) -> list[dict]:
    """The records of ``workdir/metrics.jsonl``, in order (for plots and tests)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def truncate_metrics(workdir: str, last_step: int) -> None:
    """Drops the records of ``workdir/metrics.jsonl`` after ``last_step``.

    A run resumed from the checkpoint of ``last_step`` logs the later steps
    again; without this they would appear twice. A line cut short by a killed
    process is dropped too. The file is replaced atomically, so a crash here
    leaves the old one. TensorBoard keeps the old events (it shows the newest
    value of a step).
    """
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
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
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(tmp, path)
