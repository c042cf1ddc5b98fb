"""What the command lines share: user errors in one line, config files checked first.

A mistake in what the user asked for (a config path with a typo, a config
file that does not parse, a bad value, a workdir of another run, a corrupt
data file, a full disk, a learning rate that makes the run diverge) is printed
as one line on stderr, naming the bad thing and the fix, and the program exits
with status 2; ``--traceback`` shows the traceback too. Any other exception is
a bug or a fault and keeps its traceback. The libraries raise these errors
with their own types (`USER_ERRORS`); only the command lines turn them into a
line.
"""

from __future__ import annotations

import difflib
import errno
import importlib.util
import logging
import os
import re
import sys
from collections.abc import Callable

from absl import flags

from jaxcl.config import FREE_FORM_KEYS, ConfigError
from jaxcl.data.errors import DataSourceError
from jaxcl.methods import MethodSettingError
from jaxcl.stopping import NonFiniteLossError
from jaxcl.trained_encoder import EncoderInputError
from jaxcl.workdir_identity import WorkdirMismatchError
from jaxcl.workdir_io import WorkdirError

__all__ = [
    "USER_ERRORS",
    "ConfigFileError",
    "check_config_file",
    "define_traceback_flag",
    "missing_package_line",
    "parse_flags",
    "report_user_errors",
    "user_error_line",
]

USAGE_ERROR_STATUS = 2


class ConfigFileError(ValueError):
    """A ``--config`` file that is missing, does not parse or has no usable ``get_config``."""


USER_ERRORS = (
    ConfigError,
    ConfigFileError,
    DataSourceError,
    EncoderInputError,
    MethodSettingError,
    NonFiniteLossError,  # a diverged run: its message names the step, the checkpoint kept, the fix
    WorkdirError,
    WorkdirMismatchError,
)


def check_config_file(spec: str) -> None:
    """Loads a ``--config`` value (``path[:variant]``) as ml_collections would, once.

    ml_collections reports a missing file, a syntax error or a missing
    ``get_config`` as two chained tracebacks, one of them naming an internal
    module instead of the file; this names the file and the fix.

    Raises:
      ConfigFileError: in one line.
    """
    path, _, variant = spec.partition(":")
    if not os.path.isfile(path):
        folder = os.path.dirname(path) or "."
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        close = difflib.get_close_matches(os.path.basename(path), names, n=1)
        fix = f"did you mean {os.path.join(os.path.dirname(path), close[0])}?" if close else (
            "the recipes are configs/*.py, e.g. configs/simclr_fashion_mnist.py"
        )  # fmt: skip
        raise ConfigFileError(f"--config={spec}: {path} does not exist; {fix}")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    try:
        compile(source, path, "exec")
    except SyntaxError as error:
        raise ConfigFileError(
            f"--config={spec}: {path} line {error.lineno}: {error.msg}; fix the file"
        ) from None
    module_spec = importlib.util.spec_from_file_location("jaxcl_checked_config", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
        get_config = getattr(module, "get_config", None)
        if not callable(get_config):
            raise ConfigFileError(
                f"--config={spec}: {path} defines no get_config(); a config file returns its "
                "ConfigDict from get_config() (see configs/simclr_fashion_mnist.py)"
            )
        get_config(variant) if variant else get_config()
    except ConfigFileError:
        raise
    except (AttributeError, KeyError) as error:  # a key the locked config refuses
        raise ConfigFileError(_config_key_error(error, [f"--config={spec}"])) from error
    except Exception as error:  # the user's file: its own error, in one line
        raise ConfigFileError(
            f"--config={spec}: {path} failed: {type(error).__name__}: {_first_line(error, 300)}"
        ) from error


def _first_line(error: BaseException, limit: int | None = None) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else ""


def _no_space_left(error: BaseException) -> OSError | None:
    """The ENOSPC error in an exception's chain (orbax wraps it in its own)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return error
        error = error.__cause__ or error.__context__
    return None


def user_error_line(error: BaseException, workdir: str | None = None) -> str | None:
    """The one line to print for a user error, or None for a bug or fault.

    Args:
      error: the exception that ended the program.
      workdir: the program's ``--workdir``, named when a full disk's error
        does not say which file it was writing.
    """
    if isinstance(error, USER_ERRORS):
        return _first_line(error)
    if isinstance(error, ModuleNotFoundError):
        return missing_package_line(error)
    full = _no_space_left(error)
    if full is not None:
        where = full.filename or workdir or "the workdir"
        return (
            f"no space left on the device of {where}; free space there (or use another "
            "--workdir) and rerun: the run resumes from its last checkpoint, which is kept"
        )
    return None


# Modules of the optional extras in pyproject.toml, by the extra that installs them.
_EXTRAS = {"torch": "weights", "PIL": "bench", "nbclient": "notebooks", "nbformat": "notebooks"}
# Import names that differ from their package's name on PyPI.
_PACKAGES = {
    "tensorflow_datasets": "tensorflow-datasets",
    "ml_collections": "ml-collections",
    "orbax": "orbax-checkpoint",
    "PIL": "pillow",
    "absl": "absl-py",
}


def missing_package_line(error: ModuleNotFoundError) -> str | None:
    """The one line for a package that is not installed: what to install, and how.

    Returns None when the missing module is jaxcl's own (a broken install, a bug).
    """
    module = (error.name or "").split(".")[0]
    if not module or module == "jaxcl":
        return None
    package = _PACKAGES.get(module, module)
    extra = _EXTRAS.get(module)
    install = f"pip install -e '.[{extra}]'" if extra else "pip install -e ."
    return (
        f"the Python package {package!r} is not installed; run `{install}` in the jaxcl "
        f"checkout (or `pip install {package}`)"
    )


def define_traceback_flag() -> None:
    """``--traceback``: show the traceback of a user error too."""
    flags.DEFINE_bool("traceback", False, "Show the traceback of a user error too.")


def report_user_errors(program: str, main: Callable[[list[str]], None]) -> Callable:
    """Wraps an absl ``main`` so that user errors end the program in one line.

    Args:
      program: the name the line starts with, e.g. ``'jaxcl.main'``.
      main: the absl main function; the program defines ``--traceback``
        (``define_traceback_flag``).

    Returns:
      The wrapped main function, for ``absl.app.run``.
    """

    def wrapped(argv):
        try:
            return main(argv)
        except Exception as error:
            line = user_error_line(error, getattr(flags.FLAGS, "workdir", None))
            if line is None or flags.FLAGS.traceback:
                raise
            # Futures of a failed async checkpoint write (orbax, TensorStore) are
            # reported by asyncio as the interpreter exits; the line is the news.
            logging.getLogger("asyncio").disabled = True
            sys.stderr.write(f"{program}: {line}\n")
            sys.exit(USAGE_ERROR_STATUS)

    return wrapped


def parse_flags(program: str) -> Callable[[list[str]], list[str]]:
    """absl's flag parser, with ``--config`` checked first and key errors in one line.

    Returns:
      A ``flags_parser`` for ``absl.app.run``.
    """

    def parse(argv: list[str]) -> list[str]:
        try:
            for argument in argv[1:]:
                if argument.startswith("--config="):
                    check_config_file(argument.split("=", 1)[1])
            return flags.FLAGS(argv)
        except ConfigFileError as error:
            line = str(error)
        except flags.Error as error:
            line = f"flags: {error}"
        except (AttributeError, KeyError) as error:
            line = _config_key_error(error, argv)
        sys.stderr.write(f"{program}: {line}\n")
        sys.exit(USAGE_ERROR_STATUS)

    return parse


def _config_key_error(error: Exception, argv: list[str]) -> str:
    """One line for a locked config's refusal of an unknown key.

    ml_collections raises it from deep inside flag parsing, with a traceback and
    (for config files) every field of the config in the message.
    """
    text = str(error).replace("\\n", "\n").replace("\\'", "'")
    key = re.search(r"""Key "([\w.]+)" does not exist|^'+([\w.]+)'""", text)
    overrides = [arg for arg in argv if arg.startswith("--config.")]
    for override in overrides:
        name, _, value = override[len("--config.") :].partition("=")
        section, _, option = name.partition(".")
        if section in FREE_FORM_KEYS and option:
            return (
                f"{override}: {section} is set whole, as JSON: "
                f"--config.{section}='{{\"{option}\": {_json_value(value)}}}'"
            )
    if key is None:
        return f"invalid config: {text.strip().splitlines()[-1][:300]}"
    name = key.group(1) or key.group(2)
    suggestion = re.search(r'Did you mean "([\w.]+)"', text)
    fix = f"did you mean {suggestion.group(1)!r}?" if suggestion else "see jaxcl/config.py."
    given = [arg for arg in overrides if name in arg.split("=")[0]]
    given = given or [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    where = f"{given[0]}: " if given else ""
    return f"{where}config key {name!r} does not exist (the config is locked); {fix}"


def _json_value(text: str) -> str:
    """A flag's value as it would be written in JSON (numbers and booleans bare)."""
    if re.fullmatch(r"-?\d+(\.\d*)?([eE][-+]?\d+)?|true|false", text):
        return text
    return '"' + text.replace('"', '\\"') + '"'
