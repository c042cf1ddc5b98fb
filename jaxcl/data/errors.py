"""The data errors a user can act on, importable without TensorFlow."""

from __future__ import annotations

__all__ = ["DataSourceError", "corrupt_prepared_dataset"]


class DataSourceError(ValueError):
    """A data file that is truncated or corrupt; the message names it and the fix."""


def corrupt_prepared_dataset(name: str, directory: str, error: BaseException) -> DataSourceError:
    """The error for a prepared TFDS dataset whose files fail to read (``DataLossError``).

    TFDS does not check its files again once prepared, so every rerun would fail
    the same way: the fix is to prepare it again.
    """
    detail = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
    return DataSourceError(
        f"the prepared {name} in {directory} is corrupt ({type(error).__name__}: {detail}); "
        f"delete that directory (rm -r {directory}) and rerun to prepare it again"
    )
