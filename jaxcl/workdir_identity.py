"""A workdir belongs to one run: a rerun may resume it, not turn it into another run.

A workdir's ``config.json`` says what its checkpoints, ``metrics.jsonl`` and
``results.json`` came from. Rerunning ``jaxcl.main`` on it resumes the run, so
the new config must be the same run: ``check_rerun`` compares it with the
stored one, before anything is written or computed, and refuses in one line
that names the differing keys. Keys that may change on resume
(`RESUMABLE_KEYS`: logging, checkpoint cadence, evaluation, the data's
location, a longer ``num_steps``/``num_epochs``) are allowed; anything else
needs a new workdir, or ``fork=True`` (``--fork``) to continue the checkpoint
under a changed config on purpose, which keeps the earlier config beside the
new one.
"""

from __future__ import annotations

import json
import logging

import ml_collections

from jaxcl import workdir_io
from jaxcl.config import FREE_FORM_KEYS, save_config

__all__ = [
    "RESUMABLE_KEYS",
    "WorkdirMismatchError",
    "check_rerun",
    "config_differences",
    "store_config",
]

# Dotted keys (or sections, ending in '.') that a resumed run may change.
RESUMABLE_KEYS = (
    "log_every_steps",
    "checkpoint_every_steps",
    "max_checkpoints_to_keep",
    "progress_bar",
    "nonfinite_loss",  # what its error suggests after a NaN: rerun with 'skip'
    "max_consecutive_skips",
    "knn_every_steps",
    "knn_k",
    "knn_temperature",
    "knn_train_examples",
    "eval.",  # every evaluation setting: evaluation reads the finished encoder
    "data_dir",  # the same data, somewhere else
    "eval_train_split",
    "eval_test_split",
)
# May change only upwards: extending a finished run.
_EXTENSIBLE_KEYS = ("num_steps", "num_epochs")


class WorkdirMismatchError(ValueError):
    """A rerun whose config is another run than the one in its workdir."""


def _flatten(tree: dict, prefix: str = "") -> dict:
    """Dotted keys to leaf values; free-form option dicts stay whole values."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key not in FREE_FORM_KEYS:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _as_stored(config: ml_collections.ConfigDict) -> dict:
    """The config as ``config.json`` holds it (tuples become lists, and so on)."""
    return json.loads(json.dumps(config.to_dict()))


def config_differences(stored: dict, config: ml_collections.ConfigDict) -> dict:
    """``{dotted key: (stored value, new value)}`` for every key that differs.

    Keys only one side has (added to jaxcl since the run was stored) are left
    out: ``load_config`` gives them their defaults.
    """
    old, new = _flatten(stored), _flatten(_as_stored(config))
    return {
        key: (old[key], new[key]) for key in sorted(old.keys() & new.keys()) if old[key] != new[key]
    }


def _resumable(key: str, old, new) -> bool:
    if key in _EXTENSIBLE_KEYS:
        return isinstance(old, int | float) and isinstance(new, int | float) and new >= old
    return any(key == allowed or key.startswith(allowed) for allowed in RESUMABLE_KEYS if allowed)


def check_rerun(config: ml_collections.ConfigDict, workdir: str, *, fork: bool = False) -> dict:
    """Refuses a config that is not the run stored in ``workdir``; reads, never writes.

    Args:
      config: the config of the new invocation.
      workdir: its ``--workdir``.
      fork: accept any difference (continue the checkpoint under the new config).

    Returns:
      The differences (``config_differences``), empty for a new workdir.

    Raises:
      WorkdirMismatchError: keys outside `RESUMABLE_KEYS` differ (or a step
        budget shrinks) and ``fork`` is False; or ``config.json`` is unreadable.
      jaxcl.workdir_io.WorkdirError: the workdir's filesystem cannot be read.
    """
    path = workdir_io.resolve(workdir) / "config.json"
    try:
        exists = path.exists()
    except Exception as error:  # a scheme without a backend, no credentials, ...
        raise workdir_io.unusable(workdir, error, "read") from error
    if not exists:
        return {}
    try:
        stored = workdir_io.read_json(path)
    except (ValueError, OSError) as error:
        raise WorkdirMismatchError(
            f"{path} is unreadable ({type(error).__name__}: {str(error)[:120]}); restore it from "
            "a copy, or train in a new --workdir"
        ) from None
    differences = config_differences(stored, config)
    refused = {k: v for k, v in differences.items() if not _resumable(k, *v)}
    if refused and not fork:
        shown = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in list(refused.items())[:6])
        more = f" and {len(refused) - 6} more" if len(refused) > 6 else ""
        raise WorkdirMismatchError(
            f"--workdir={workdir} holds another run ({shown}{more}); use a new --workdir, "
            "or pass --fork to continue its checkpoint under this config"
        )
    return differences


def store_config(config: ml_collections.ConfigDict, workdir: str, *, forked: bool) -> None:
    """Writes ``config.json`` for a run that passed `check_rerun`.

    A forked run first keeps the earlier config as ``config.before_fork.<n>.json``
    (the first free n), so the workdir still says what its earlier steps were.
    """
    root = workdir_io.resolve(workdir)
    if forked:
        index = 1
        while (root / f"config.before_fork.{index}.json").exists():
            index += 1
        kept = root / f"config.before_fork.{index}.json"
        workdir_io.write_bytes(kept, (root / "config.json").read_bytes())
        logging.warning("forked run: the earlier config is kept as %s", kept)
    save_config(config, workdir)
