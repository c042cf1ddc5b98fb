"""What a person sees on the terminal: jaxcl's own lines, with library logs in a file.

A run's screen shows a header (what trains where), the progress bar, one line
per checkpoint, warnings and errors, and the final summary table; the INFO
logs of orbax, TFDS, absl and JAX (backend probing, every checkpoint's
``Creating tmp directory ...``) go to ``WORKDIR/log.txt``. The command lines
set that up with ``route_logs``; library code speaks to the person through
``say``, which in a notebook (nothing routed) is an ordinary INFO log.

``--verbosity=0`` (or any ``--verbosity``) or ``JAXCL_VERBOSE=1`` keeps every
log on the screen as well.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import tempfile

from absl import logging as absl_logging
from tqdm.auto import tqdm

from jaxcl import workdir_io

__all__ = [
    "CONSOLE_LOGGER",
    "LogRouting",
    "StepProgress",
    "format_summary",
    "header_lines",
    "log_path",
    "open_log_file",
    "route_logs",
    "say",
    "verbose_requested",
]

# The logger of lines meant for the person at the terminal.
CONSOLE_LOGGER = "jaxcl.console"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_FILE_FORMAT = "%(asctime)s %(levelname).1s %(filename)s:%(lineno)d] %(message)s"


def say(message: str, *args) -> None:
    """Shows ``message % args`` on the run's terminal (and logs it in ``log.txt``)."""
    logging.getLogger(CONSOLE_LOGGER).info(message, *args)


def verbose_requested(verbosity_flag_present: bool) -> bool:
    """Whether every library log stays on the screen: ``--verbosity`` or ``JAXCL_VERBOSE``."""
    return verbosity_flag_present or os.environ.get("JAXCL_VERBOSE", "") not in ("", "0")


class _TqdmStreamHandler(logging.Handler):
    """Writes lines above a progress bar instead of through it."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream

    def emit(self, record):
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # logging must never raise into the run
            self.handleError(record)


def _is_jaxcl(record: logging.LogRecord) -> bool:
    return os.path.abspath(record.pathname).startswith(_PACKAGE_DIR + os.sep)


class _ScreenFilter(logging.Filter):
    """What absl's stderr handler still shows: errors, and warnings of jaxcl's own.

    Library warnings (TFDS's deprecations, ``Variant folder ... has no
    dataset_info.json``) are for the log file; jaxcl's own (a skipped step, an
    unreadable checkpoint set aside) are for the person. ``say`` has its own
    handler.
    """

    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record):
        if record.name == CONSOLE_LOGGER:
            return False
        if self.verbose or record.levelno >= logging.ERROR:
            return True
        return record.levelno >= logging.WARNING and _is_jaxcl(record)


class LogRouting:
    """The handlers ``route_logs`` installed; ``write_to`` names the log file."""

    def __init__(self, verbose: bool, stream=None):
        self.verbose = verbose
        self.log_path: str | None = None
        root = logging.getLogger()
        # Until the workdir and the process index are known (after
        # jax.distributed starts, which logs its own lines), records wait here.
        self._buffer = logging.handlers.MemoryHandler(
            capacity=100_000, flushLevel=logging.CRITICAL + 1
        )
        self._buffer.setLevel(logging.DEBUG)
        root.addHandler(self._buffer)
        self._file: logging.Handler | None = None
        self._screen_filter = _ScreenFilter(verbose)
        absl_logging.get_absl_handler().addFilter(self._screen_filter)
        self._console = _TqdmStreamHandler(stream if stream is not None else sys.stdout)
        self._console.setFormatter(logging.Formatter("%(message)s"))
        console = logging.getLogger(CONSOLE_LOGGER)
        console.setLevel(logging.INFO)
        console.addHandler(self._console)
        # INFO reaches the handlers whatever absl's verbosity makes of the root.
        root.setLevel(min(root.level or logging.INFO, logging.INFO))

    def write_to(self, workdir: str, process_index: int) -> str:
        """Names the run's log file; records keep waiting until ``open_file``.

        The file is opened only once the run has been accepted (``open_log_file``
        from ``jaxcl.train.train``, after the workdir checks), so that a refused
        command leaves a finished run's workdir as it was.

        Args:
          workdir: the run's ``--workdir``; a ``gs://``-style one keeps its log
            in a local temporary directory (appending to cloud files is not
            possible).
          process_index: this process; others than 0 write ``log.process_N.txt``.

        Returns:
          The log file's path.
        """
        name = "log.txt" if process_index == 0 else f"log.process_{process_index}.txt"
        if workdir_io.has_scheme(workdir):
            flat = workdir.replace("://", "_").replace("/", "_")
            folder = os.path.join(tempfile.gettempdir(), "jaxcl_logs", flat)
        else:
            folder = workdir
        self.log_path = os.path.join(folder, name)
        if process_index != 0:  # process 0 speaks for the run
            logging.getLogger(CONSOLE_LOGGER).removeHandler(self._console)
        return self.log_path

    def open_file(self) -> None:
        """Opens the log file (appending) and writes the records held so far to it."""
        if self._file is not None or self.log_path is None:
            return
        os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
        self._file = logging.FileHandler(self.log_path, mode="a", encoding="utf-8")
        self._file.setFormatter(logging.Formatter(_FILE_FORMAT))
        root = logging.getLogger()
        self._buffer.setTarget(self._file)
        self._buffer.flush()
        root.removeHandler(self._buffer)
        root.addHandler(self._file)

    def close(self) -> None:
        """Removes the handlers (tests; a process's routing otherwise lasts until exit)."""
        root = logging.getLogger()
        for handler in (self._buffer, self._file):
            if handler is not None:
                root.removeHandler(handler)
                handler.close()
        absl_logging.get_absl_handler().removeFilter(self._screen_filter)
        logging.getLogger(CONSOLE_LOGGER).removeHandler(self._console)
        global _routing
        if _routing is self:
            _routing = None


def route_logs(*, verbose: bool, stream=None) -> LogRouting:
    """Keeps library logs off the screen, and shows jaxcl's ``say`` lines on it.

    Call once in a command line, before JAX starts; then ``write_to(workdir,
    process_index)`` once the process index is known.

    Args:
      verbose: leave every log on the screen too (``verbose_requested``).
      stream: where ``say`` lines go (default stdout).

    Returns:
      The ``LogRouting``; ``log_path()`` reports where it writes.
    """
    global _routing
    _routing = LogRouting(verbose, stream)
    return _routing


_routing: LogRouting | None = None


def open_log_file() -> None:
    """Starts writing the routed logs to the run's log file (no-op where nothing is routed).

    Called once the run is accepted: its workdir is its own and writable.
    """
    if _routing is not None:
        _routing.open_file()


def log_path() -> str | None:
    """The log file of this process's routed logs (None where nothing was routed)."""
    return None if _routing is None else _routing.log_path


def header_lines(
    config, *, total_steps: int, devices: int, processes: int, workdir: str, log_path: str | None
) -> list[str]:
    """The lines that open a run: what trains, on what, for how long, and where."""
    lines = [
        f"jaxcl: {config.method} | {config.model} | {config.dataset}",
        f"  {devices} device{'s' if devices != 1 else ''} in {processes} "
        f"process{'es' if processes != 1 else ''} | global batch {config.global_batch_size}"
        f" | {total_steps} steps",
        f"  workdir {workdir}",
    ]
    if log_path:
        lines.append(f"  library logs in {log_path}")
    return lines


_SUMMARY_ROWS = (
    ("linear_top1", "linear probe top-1", "%"),
    ("knn_top1", "kNN top-1", "%"),
    ("baseline_raw_pixels_top1", "baseline: raw pixels, linear top-1", "%"),
    ("baseline_random_encoder_top1", "baseline: random encoder, linear top-1", "%"),
    ("finetune_top1", "fine-tuned top-1", "%"),
    ("alignment", "alignment", ""),
    ("uniformity", "uniformity", ""),
    ("loss", "final training loss", ""),
    ("skipped_steps", "skipped steps (non-finite)", "int"),
)


def format_summary(results: dict, *, wall_seconds: float, workdir: str) -> str:
    """The table that closes a run: its scores, its wall time and where its outputs are.

    Args:
      results: ``train_and_evaluate``'s (or ``finetune_and_evaluate``'s) results.
      wall_seconds: the command's wall time.
      workdir: the run's workdir (``results.json``, ``plots/``).

    Returns:
      The table as text, one row per known result present.
    """
    rows = []
    for key, label, kind in _SUMMARY_ROWS:
        if key not in results:
            continue
        value = results[key]
        if kind == "%":
            text = f"{100 * value:.2f}%"
        elif kind == "int":
            text = f"{int(value)}"
        else:
            text = f"{value:.4f}"
        rows.append((label, text))
    minutes, seconds = divmod(round(wall_seconds), 60)
    rows.append(("wall time", f"{minutes} min {seconds:02d} s"))
    rows.append(("results", os.path.join(workdir, "results.json")))
    plots = os.path.join(workdir, "plots")
    if workdir_io.has_scheme(workdir) or os.path.isdir(plots):
        rows.append(("plots", plots + os.sep))
    width = max(len(label) for label, _ in rows)
    rule = "-" * (width + 2 + max(len(text) for _, text in rows))
    return "\n".join([rule, *(f"{label:<{width}}  {text}" for label, text in rows), rule])


class StepProgress:
    """A progress bar of completed steps, so that its rate and ETA are the device's.

    JAX dispatches steps asynchronously: the host runs ahead of the device until
    something reads a result, so a bar counting dispatched steps races ahead and
    then stalls at each logging step. This one counts a step once the next one
    is dispatched and the step's own output is ready, which keeps one step
    queued behind the running one: the device never waits for the bar.

    Args:
      total: the run's steps.
      initial: steps done before (a resumed run).
      enabled: show a bar (process 0, ``config.progress_bar``); otherwise every
        method does nothing.
    """

    def __init__(self, total: int, initial: int = 0, *, enabled: bool = True):
        self._bar = (
            tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.05)
            if enabled
            else None
        )
        self._pending = None

    @property
    def count(self) -> int | None:
        """The steps the bar shows as done (None without a bar)."""
        return None if self._bar is None else self._bar.n

    def dispatched(self, step_output) -> None:
        """Notes a dispatched step; counts the previous one once its output is ready.

        Args:
          step_output: a ``jax.Array`` the step computes (e.g. its loss).
        """
        if self._bar is None:
            return
        self.flush()
        self._pending = step_output

    def flush(self) -> None:
        """Waits for the last dispatched step and counts it (before showing its metrics)."""
        if self._bar is None or self._pending is None:
            return
        self._pending.block_until_ready()
        self._pending = None
        self._bar.update(1)

    def show(self, **values: str) -> None:
        """Shows ``values`` after the bar (the last logged metrics)."""
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def close(self) -> None:
        if self._bar is not None:
            self.flush()
            self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
