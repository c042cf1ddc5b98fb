"""The workdir on any epath filesystem: resolution, the write check, atomic JSON."""

import os

import pytest
from conftest import make_tiny_config
from etils import epath

from jaxcl import workdir_io
from jaxcl.run import train_and_evaluate


def test_local_workdirs_become_absolute_and_schemes_are_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(workdir_io.resolve("runs/a")) == str(tmp_path / "runs" / "a")
    # os.path.abspath would give the local directory ./gs:/bucket/run.
    assert str(workdir_io.resolve("gs://bucket/run")) == "gs://bucket/run"
    assert workdir_io.has_scheme("gs://bucket/run") and not workdir_io.has_scheme("runs/a")


@pytest.mark.parametrize(
    "workdir",
    ["nosuchfs://bucket/run", "s3://bucket/run", "/proc/jaxcl_cannot_write_here"],
)
def test_unwritable_workdir_fails_in_one_line_before_training(tmp_path, monkeypatch, workdir):
    monkeypatch.chdir(tmp_path)
    config = make_tiny_config()
    with pytest.raises(workdir_io.WorkdirError) as error:
        train_and_evaluate(config, workdir)
    message = str(error.value)
    assert "\n" not in message and workdir in message
    # Nothing was written locally in its place (no ./nosuchfs: or ./s3: directory).
    assert os.listdir(tmp_path) == []


def test_write_json_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = epath.Path(tmp_path) / "results.json"
    workdir_io.write_json(path, {"b": 1, "a": [1, 2]})
    workdir_io.write_json(path, {"b": 2})
    assert workdir_io.read_json(path) == {"b": 2}
    assert sorted(os.listdir(tmp_path)) == ["results.json"]
