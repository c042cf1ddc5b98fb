"""A training run on a ``gs://`` workdir puts every output in the bucket, and resumes from it.

The bucket is a local fake GCS (``gcs_emulator.GcsEmulator``): gcp-storage-emulator
running in this pytest process, with a TLS proxy in front of it. The run itself
happens in a subprocess, because TensorStore and TensorFlow read their endpoint
variables once per process. In that subprocess

* google-cloud-storage (orbax's checkpoint-directory queries) and TensorStore
  (orbax's array data) reach the emulator **directly**
  (``STORAGE_EMULATOR_HOST``, ``TENSORSTORE_GCS_HTTP_URL``);
* TensorFlow's gs:// filesystem goes **through the TLS proxy**, because its
  ``https://www.googleapis.com`` / ``https://storage.googleapis.com`` endpoints
  are compiled in. That filesystem carries everything etils.epath does on gs://
  (config.json, metrics.jsonl, results.json, plots/*.png, the workdir write
  check), orbax's directory operations (create, rename, list) and TensorBoard's
  event files.

Nothing is mocked inside jaxcl: the code under test is ``train_and_evaluate``
as a user calls it; only the network endpoints are redirected to localhost.
The bucket is then checked from the outside with a google-cloud-storage client.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from gcs_emulator import GcsEmulator

REPO = Path(__file__).resolve().parent.parent
BUCKET = "jaxcl-test"
WORKDIR = f"gs://{BUCKET}/run"

# Run in a subprocess whose cwd is an empty tmp dir: a path mistaken for a local
# one (os.path.abspath("gs://...")) would show up there as a "gs:" directory.
_TRAIN = textwrap.dedent(
    """
    import logging, sys
    sys.path.insert(0, {tests!r})
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from conftest import make_tiny_config
    from jaxcl import xla_defaults
    from jaxcl.run import train_and_evaluate

    xla_defaults.enable_compilation_cache({cache!r})  # local; the second run compiles less

    config = make_tiny_config(
        num_steps={num_steps}, **{{"eval.run_at_end": {evaluate}, "eval.linear_epochs": 2}}
    )
    results = train_and_evaluate(config, {workdir!r})
    print("RESULTS", sorted(results))
    """
)


@pytest.fixture(scope="module")
def gcs():
    with GcsEmulator(BUCKET) as emulator:
        yield emulator


def _train(gcs, cwd, cache, num_steps, evaluate=True):
    """Runs ``train_and_evaluate`` on ``WORKDIR`` in a fresh process; returns its log."""
    env = {
        **os.environ,
        **gcs.env(),
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    script = _TRAIN.format(
        tests=str(REPO / "tests"), cache=str(cache), num_steps=num_steps, workdir=WORKDIR,
        evaluate=evaluate,
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"training on {WORKDIR} failed:\n{log[-6000:]}"
    return log


def _steps(gcs):
    lines = gcs.read("run/metrics.jsonl").decode().splitlines()
    return [json.loads(line)["step"] for line in lines if line.strip()]


def _checkpoint_steps(objects):
    prefix = "run/checkpoints/"
    names = (name[len(prefix) :].split("/")[0] for name in objects if name.startswith(prefix))
    return sorted({int(name) for name in names if name.isdigit()})


def test_gs_workdir_holds_every_output_and_resumes(gcs, tmp_path_factory):
    cwd, cache = tmp_path_factory.mktemp("cwd"), tmp_path_factory.mktemp("xla_cache")
    _train(gcs, cwd, cache, num_steps=4)

    objects = gcs.list_objects("run/")
    names = set(objects)
    assert "run/config.json" in names
    assert json.loads(gcs.read("run/config.json"))["num_steps"] == 4
    assert _steps(gcs) == [1, 2, 3, 4]
    assert any(name.startswith("run/tensorboard/events.") for name in names), sorted(names)
    assert any(name.startswith("run/checkpoints/4/") for name in names), sorted(names)
    assert 4 in _checkpoint_steps(names)
    assert "linear_top1" in json.loads(gcs.read("run/results.json"))
    # TensorFlow marks a directory with an empty object "dir/"; leave those out.
    plots = {
        name: size
        for name, size in objects.items()
        if name.startswith("run/plots/") and not name.endswith("/")
    }
    assert plots and all(name.endswith(".png") for name in plots), sorted(names)
    assert all(size > 1000 for size in plots.values()), plots
    # Nothing landed in a local directory named like the URL (./gs:/jaxcl-test/run).
    assert os.listdir(cwd) == []

    # The resume needs no second evaluation: the first one checked its outputs.
    log = _train(gcs, cwd, cache, num_steps=6, evaluate=False)

    assert "resuming from checkpoint at step 4" in log, log[-6000:]
    assert _steps(gcs) == [1, 2, 3, 4, 5, 6]
    assert {4, 6} <= set(_checkpoint_steps(gcs.list_objects("run/checkpoints/")))
    assert json.loads(gcs.read("run/config.json"))["num_steps"] == 6
    assert os.listdir(cwd) == []
