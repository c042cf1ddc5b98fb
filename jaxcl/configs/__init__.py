"""The shipped recipes, one file each, loadable from a checkout or an installed package.

In a checkout, ``configs/`` links here, so ``--config=configs/<name>.py`` works
from the repository root. From an installed package::

    python -m jaxcl.main --config=$(python -m jaxcl.configs simclr_imagenet) --workdir=DIR

or in Python: ``jaxcl.configs.get_config('simclr_imagenet')``.
"""

from __future__ import annotations

import importlib
import os

__all__ = ["NAMES", "get_config", "path"]

_DIRECTORY = os.path.dirname(os.path.abspath(__file__))
NAMES = tuple(
    sorted(name[:-3] for name in os.listdir(_DIRECTORY) if name.endswith(".py") and name[0] != "_")
)


def _check(name: str) -> None:
    if name not in NAMES:
        raise ValueError(f"unknown recipe {name!r}; shipped: {', '.join(NAMES)}")


def path(name: str) -> str:
    """The file of recipe ``name`` (e.g. 'simclr_imagenet'), for ``--config=``."""
    _check(name)
    return os.path.join(_DIRECTORY, f"{name}.py")


def get_config(name: str, arg: str = ""):
    """Recipe ``name``'s config (``arg``: its variant, e.g. 'smoke')."""
    _check(name)
    return importlib.import_module(f"jaxcl.configs.{name}").get_config(arg)
