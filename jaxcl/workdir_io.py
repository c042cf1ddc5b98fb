"""A run's directory on any filesystem that ``etils.epath`` knows (local, gs://, ...).

Every read and write of a workdir (config.json, metrics.jsonl, results.json,
plots, TensorBoard events, orbax checkpoints) goes through ``epath``, so a
``gs://bucket/run`` workdir holds all of a run's outputs in the bucket. A local
path is made absolute (orbax wants absolute paths); a path with a scheme is
kept as it is (``os.path.abspath('gs://b/run')`` would be the local directory
``./gs:/b/run``, lost with the VM).
"""

from __future__ import annotations

import errno
import json
import re
import uuid

from etils import epath

__all__ = [
    "WorkdirError",
    "check_writable",
    "has_scheme",
    "read_json",
    "resolve",
    "write_bytes",
    "write_json",
]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class WorkdirError(ValueError):
    """A workdir that cannot be used; the message is one line with the fix."""


def resolve(workdir: str | epath.Path) -> epath.Path:
    """The workdir as an ``epath.Path``: absolute if local, unchanged if it has a scheme.

    Raises:
      WorkdirError: the scheme is not one ``etils.epath`` knows.
    """
    text = str(workdir)
    if not _SCHEME.match(text):
        return epath.Path(text).expanduser().resolve()
    try:
        return epath.Path(text)
    except KeyError:  # epath's table of URI prefixes has no entry for it
        scheme = text.split("://")[0]
        raise WorkdirError(
            f"{text!r} uses the scheme {scheme}://, which etils.epath cannot open; "
            "use a local path or gs://, s3://"
        ) from None


def has_scheme(workdir: str | epath.Path) -> bool:
    """Whether ``workdir`` names a filesystem by scheme (``gs://``, ``s3://``, ...)."""
    return bool(_SCHEME.match(str(workdir)))


def check_writable(workdir: str | epath.Path) -> epath.Path:
    """Creates ``workdir`` and writes and deletes a probe file in it.

    Run before anything expensive starts, so that a scheme with no backend, a
    bucket without credentials or a read-only disk is one line, not a
    traceback after the first checkpoint.

    Args:
      workdir: the run directory.

    Returns:
      The resolved ``epath.Path``.

    Raises:
      WorkdirError: the directory cannot be created or written.
    """
    path = resolve(workdir)
    probe = path / f".jaxcl_write_probe_{uuid.uuid4().hex}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except Exception as error:  # any backend's error: reported in one line
        raise unusable(workdir, error, "written") from error
    return path


def unusable(workdir, error: BaseException, action: str = "read") -> WorkdirError:
    """The one-line ``WorkdirError`` for a workdir whose filesystem failed with ``error``.

    ``action``: 'written' or 'read'.
    """
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return WorkdirError(
            f"--workdir={workdir} cannot be written: no space left on its device; free space "
            "there, or pass another --workdir"
        )
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    hint = (
        "install the filesystem's backend (gs://: google-cloud-storage or tensorflow; "
        "s3://: s3fs) and check its credentials"
        if has_scheme(workdir)
        else f"pass a --workdir you can {'write to' if action == 'written' else 'read'}"
    )
    return WorkdirError(
        f"--workdir={workdir} cannot be {action} ({type(error).__name__}: {reason}); {hint}"
    )


def write_bytes(path: epath.Path, payload: bytes) -> None:
    """Writes ``path`` so that readers see the old file or the new one, never half.

    Local files go through a temporary file and a rename; object stores (gs://)
    write an object in one request, which is atomic already. Missing parent
    directories are created.
    """
    path = epath.Path(path)
    if has_scheme(path):
        path.write_bytes(payload)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_bytes(payload)
    tmp.replace(path)


def write_json(path: epath.Path, payload: dict) -> None:
    """``payload`` as indented, key-sorted JSON at ``path``, atomically."""
    write_bytes(path, json.dumps(payload, indent=2, sort_keys=True).encode("utf-8"))


def read_json(path: epath.Path):
    """The JSON document at ``path``."""
    return json.loads(epath.Path(path).read_text(encoding="utf-8"))
