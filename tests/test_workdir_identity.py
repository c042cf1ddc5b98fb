"""A workdir is one run's: a rerun resumes it or is refused before anything is written."""

import json
import os
import subprocess
import sys

import pytest
from conftest import make_tiny_config

from jaxcl.restore import restore_run
from jaxcl.run import train_and_evaluate
from jaxcl.workdir_identity import WorkdirMismatchError, check_rerun, config_differences

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _snapshot(workdir):
    """Every path under ``workdir`` with its size and modification time."""
    found = {}
    for root, dirs, files in os.walk(workdir):
        for name in dirs + files:
            path = os.path.join(root, name)
            stat = os.stat(path)
            found[os.path.relpath(path, workdir)] = (stat.st_size, stat.st_mtime_ns)
    return found


def _read_json(workdir, name):
    with open(os.path.join(workdir, name), encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 4-step run and its config."""
    workdir = str(tmp_path_factory.mktemp("finished"))
    config = make_tiny_config(num_steps=4)
    train_and_evaluate(config, workdir)
    return workdir, config


def test_differences_are_dotted_keys_with_both_values(finished):
    workdir, config = finished
    stored = _read_json(workdir, "config.json")
    changed = make_tiny_config(num_steps=4, method="alpha_cl", **{"simclr.temperature": 0.3})
    differences = config_differences(stored, changed)
    assert differences == {"method": ("simclr", "alpha_cl"), "simclr.temperature": (0.1, 0.3)}
    assert config_differences(stored, config) == {}  # tuples and lists compare equal


def test_another_run_is_refused_and_nothing_is_written(finished):
    workdir, _ = finished
    before = _snapshot(workdir)
    other = make_tiny_config(num_steps=8, method="alpha_cl")
    with pytest.raises(WorkdirMismatchError) as error:
        train_and_evaluate(other, workdir)
    message = str(error.value)
    assert "method: 'simclr' -> 'alpha_cl'" in message and "--fork" in message
    assert "num_steps" not in message  # a longer run is allowed, and not the problem
    assert "\n" not in message
    assert _snapshot(workdir) == before


def test_cli_refusal_is_one_line_exit_2_and_leaves_the_run_intact(finished):
    workdir, _ = finished
    before = _snapshot(workdir)
    command = [
        sys.executable, "-m", "jaxcl.main", f"--workdir={workdir}",
        f"--config={REPO}/configs/simclr_fashion_mnist.py:smoke",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("jaxcl.main: --workdir=") and "holds another run" in last
    assert "Traceback" not in out.stderr
    assert _snapshot(workdir) == before


def test_longer_run_and_eval_settings_resume(tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(make_tiny_config(num_steps=2), workdir)
    longer = make_tiny_config(num_steps=4, log_every_steps=2, **{"eval.linear_epochs": 3})
    assert check_rerun(longer, workdir) == {
        "eval.linear_epochs": (100, 3),
        "log_every_steps": (1, 2),
        "num_steps": (2, 4),
    }
    train_and_evaluate(longer, workdir)
    assert restore_run(workdir).step == 4
    stored = _read_json(workdir, "config.json")
    assert stored["num_steps"] == 4  # config.json says what the run now is
    with pytest.raises(WorkdirMismatchError, match=r"num_steps: 4 -> 3"):
        check_rerun(make_tiny_config(num_steps=3), workdir)  # a shorter budget is another run


def test_fork_continues_the_checkpoint_and_keeps_the_earlier_config(tmp_path):
    workdir = str(tmp_path / "run")
    train_and_evaluate(make_tiny_config(num_steps=2), workdir)
    forked = make_tiny_config(num_steps=4, **{"simclr.temperature": 0.5})
    train_and_evaluate(forked, workdir, fork=True)
    assert restore_run(workdir).step == 4
    kept = _read_json(workdir, "config.before_fork.1.json")
    assert kept["simclr"]["temperature"] == 0.1 and kept["num_steps"] == 2
    stored = _read_json(workdir, "config.json")
    assert stored["simclr"]["temperature"] == 0.5


def test_truncated_config_json_is_one_line(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text('{"method": "sim')
    with pytest.raises(WorkdirMismatchError, match=r"config.json is unreadable \(JSONDecodeError"):
        check_rerun(make_tiny_config(), str(workdir))
