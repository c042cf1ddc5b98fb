"""A user's mistakes end in one line that names the bad thing and the fix (issue 16).

The command lines print a user error as one line on stderr and exit with status
2, before anything is written; the libraries raise the same errors with their
own types. Covered here: config files (path, syntax, ``get_config``), a value
out of range, a free-form option spelt as a dotted key, a workdir that holds no
run or a truncated ``config.json``, truncated Fashion-MNIST sources, a corrupt
prepared TFDS dataset, a full disk, and the functional API's inputs.
"""

import contextlib
import errno
import gzip
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tiny_tfds  # registers the jaxcl_tiny_shapes builder
from flax import nnx

from jaxcl import cli, data, losses, models
from jaxcl.checkpoint import Checkpointer
from jaxcl.config import NotARunError, load_config
from jaxcl.configs import get_config
from jaxcl.data import fashion_mnist_debian
from jaxcl.data.errors import DataSourceError
from jaxcl.train import Trainer, train
from jaxcl.workdir_io import WorkdirError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "simclr_fashion_mnist.py") + ":smoke"


def _cli(module, *arguments, cwd=ROOT):
    """Runs ``python -m module arguments``; returns (exit status, stderr lines)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-m", module, *arguments],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return done.returncode, lines


# ------------------------------------------------------------ config files


def test_a_config_path_with_a_typo_names_the_close_file():
    with pytest.raises(cli.ConfigFileError) as error:
        cli.check_config_file("configs/simclr_fashion_mnst.py:smoke")
    assert str(error.value) == (
        "--config=configs/simclr_fashion_mnst.py:smoke: configs/simclr_fashion_mnst.py does "
        "not exist; did you mean configs/simclr_fashion_mnist.py?"
    )


def test_config_syntax_and_missing_get_config_name_the_file(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("from jaxcl.config import default_config\n\ndef get_config(:\n")
    with pytest.raises(cli.ConfigFileError, match=rf"{broken} line 3: invalid syntax; fix"):
        cli.check_config_file(str(broken))
    empty = tmp_path / "empty.py"
    empty.write_text("import ml_collections\n")
    with pytest.raises(cli.ConfigFileError, match=rf"{empty} defines no get_config\(\)"):
        cli.check_config_file(str(empty))
    typo = tmp_path / "typo.py"
    typo.write_text(
        "from jaxcl.config import default_config\n\n\ndef get_config():\n"
        "    config = default_config()\n    config.simclr.temprature = 0.5\n    return config\n"
    )
    with pytest.raises(cli.ConfigFileError) as error:
        cli.check_config_file(str(typo))
    assert str(error.value) == (
        f"{typo}: config key 'temprature' does not exist (the config is locked); "
        "did you mean 'temperature'?"
    )
    with pytest.raises(cli.ConfigFileError, match=r"failed: ValueError: unknown config variant"):
        cli.check_config_file(SMOKE[: -len(":smoke")] + ":smok")
    cli.check_config_file(SMOKE)  # a good one passes


def test_the_main_cli_refuses_in_one_line_and_writes_nothing(tmp_path):
    workdir = tmp_path / "run"
    cases = {
        ("--config=configs/simclr_fashion_mnst.py",): "did you mean configs/simclr_fashion_mnist",
        (f"--config={SMOKE}", "--config.num_steps=-5"): (
            "config.num_steps=-5 must be an integer in [0, inf); use e.g. 0 (use num_epochs)"
        ),
    }
    for arguments, expected in cases.items():
        status, lines = _cli("jaxcl.main", *arguments, f"--workdir={workdir}")
        assert status == 2 and len(lines) == 1, (arguments, lines)
        assert lines[0].startswith("jaxcl.main: ") and expected in lines[0], lines
        assert not workdir.exists(), arguments


def test_the_eval_cli_refuses_a_truncated_config_in_one_line(tmp_path):
    (tmp_path / "config.json").write_text('{"method": "simclr", "model": "res')
    status, lines = _cli("jaxcl.eval", f"--workdir={tmp_path}")
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"jaxcl.eval: {tmp_path}/config.json is not valid JSON (cut short?")
    assert "restore it from a copy" in lines[0]
    assert sorted(os.listdir(tmp_path)) == ["config.json"]  # nothing written


def test_load_config_errors_keep_their_library_types(tmp_path):
    with pytest.raises(NotARunError) as error:
        load_config(str(tmp_path))
    assert isinstance(error.value, FileNotFoundError) and isinstance(error.value, WorkdirError)
    assert cli.user_error_line(error.value) == (
        f"{tmp_path}/config.json does not exist; pass the --workdir of a jaxcl training run"
    )
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(WorkdirError, match="holds no config object"):
        load_config(str(tmp_path))


# ------------------------------------------------------------ data sources


def _fake_fashion_mnist(directory, train=64, test=16):
    """The four IDX files, with the real headers, for ``train`` and ``test`` examples."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("t10k", test)):
        header = np.array([2051, count, 28, 28], ">u4").tobytes()
        pixels = rng.integers(0, 256, (count, 28, 28), np.uint8).tobytes()
        with gzip.open(os.path.join(directory, f"{split}-images-idx3-ubyte.gz"), "wb") as f:
            f.write(header + pixels)
        labels = np.array([2049, count], ">u4").tobytes() + bytes(i % 10 for i in range(count))
        with gzip.open(os.path.join(directory, f"{split}-labels-idx1-ubyte.gz"), "wb") as f:
            f.write(labels)


def test_a_truncated_fashion_mnist_file_is_named_with_the_fix(tmp_path):
    _fake_fashion_mnist(tmp_path)
    path = os.path.join(tmp_path, "train-images-idx3-ubyte.gz")
    assert fashion_mnist_debian.read_idx_images(path, 64).shape == (64, 28, 28)
    with open(path, "rb") as f:
        payload = f.read()
    with open(path, "wb") as f:
        f.write(payload[: len(payload) // 2])  # a download or copy cut short
    with pytest.raises(DataSourceError) as error:
        fashion_mnist_debian.read_idx_images(path, 64)
    message = str(error.value)
    assert message.startswith(f"{path} is truncated or corrupt (EOFError")
    assert "apt-get install --reinstall dataset-fashion-mnist" in message and "\n" not in message
    assert cli.user_error_line(error.value) == message


def test_a_corrupt_prepared_tfds_dataset_names_its_directory(tmp_path):
    name = "jaxcl_tiny_shapes/fixed"
    data.prepare_dataset(name, str(tmp_path))
    (directory,) = {os.path.dirname(p) for p in _files(tmp_path, ".tfrecord")}
    for path in _files(tmp_path, ".tfrecord"):
        with open(path, "r+b") as f:
            f.seek(40)
            f.write(b"\xff" * 64)  # flipped bytes: the record's checksum fails
    data.clear_cache()
    with pytest.raises(DataSourceError) as error:
        data.make_eval_arrays(name, split="train", image_size=20, data_dir=str(tmp_path))
    message = str(error.value)
    assert message.startswith(f"the prepared jaxcl_tiny_shapes in {directory} is corrupt")
    assert f"rm -r {directory}" in message and "\n" not in message
    # The fix works: delete it, and it is prepared again.
    shutil.rmtree(directory)
    data.clear_cache()
    _, labels = data.make_eval_arrays(name, split="train", image_size=20, data_dir=str(tmp_path))
    assert len(labels) == tiny_tfds.SPLIT_SIZES["train"]


def _files(root, suffix):
    return sorted(
        os.path.join(folder, name)
        for folder, _, names in os.walk(root)
        for name in names
        if suffix in name
    )


# -------------------------------------------------------------- full disk


def test_no_space_left_is_one_line_through_wrapping_errors():
    full = OSError(errno.ENOSPC, "No space left on device", "/runs/a/checkpoints/8")
    try:
        try:
            raise full
        except OSError as error:
            raise RuntimeError("async save failed") from error
    except RuntimeError as wrapped:
        line = cli.user_error_line(wrapped)
    assert line.startswith("no space left on the device of /runs/a/checkpoints/8; free space")
    assert "last checkpoint, which is kept" in line
    assert cli.user_error_line(RuntimeError("a bug")) is None


def test_a_full_disk_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)])
    if mounted.returncode:
        pytest.skip("needs root to mount a small tmpfs (as on the CI machine)")
    try:
        workdir = str(disk / "run")
        config = get_config("simclr_fashion_mnist", "smoke")
        config.num_steps, config.checkpoint_every_steps, config.log_every_steps = 4, 2, 1

        def fill_the_disk_at_step_3(step, state, last):
            if step == 3:
                # Once the async save of step 2 is complete (orbax renames its
                # directory to the step), the disk fills up.
                deadline = time.monotonic() + 120
                while not os.path.isdir(os.path.join(workdir, "checkpoints", "2")):
                    assert time.monotonic() < deadline, "checkpoint 2 was never completed"
                    time.sleep(0.05)
                _fill(disk / "filler")
            return {}

        with pytest.raises(Exception) as error:
            train(Trainer(config), workdir, on_log=fill_the_disk_at_step_3)
        line = cli.user_error_line(error.value)
        assert line is not None and line.startswith("no space left on the device of "), error
        assert "\n" not in line and "last checkpoint, which is kept" in line
        (disk / "filler").unlink()
        checkpointer = Checkpointer(workdir)
        assert checkpointer.latest_step() == 2
        checkpointer.close()
        # Before anything runs, a full disk is the workdir check's one line.
        _fill(disk / "filler")
        config.num_steps = 6
        with pytest.raises(WorkdirError, match="no space left on its device; free space"):
            train(Trainer(config), workdir)
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def _fill(path):
    """Writes ``path`` until its disk is full (it may be full already)."""
    with contextlib.suppress(OSError), open(path, "wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()


# ---------------------------------------------------------- functional API


@pytest.mark.parametrize(
    "temperature", [np.float32(0.0), np.array(-0.5), np.asarray([0.1, 0.0]), float("inf")]
)
def test_loss_temperatures_are_checked_as_arrays_and_scalars(temperature):
    z = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="temperature must be > 0 and finite"):
        losses.nt_xent(z, z, temperature=temperature)
    with pytest.raises(ValueError, match="temperature must be > 0 and finite"):
        losses.info_nce(z, z, temperature=temperature)
    assert np.isfinite(losses.nt_xent(z, z, temperature=np.float32(0.5)))


def test_models_create_validates_its_options():
    rngs = nnx.Rngs(0)
    with pytest.raises(ValueError, match=r"in_channels=0 must be an integer >= 1"):
        models.create("resnet18", in_channels=0, rngs=rngs)
    with pytest.raises(ValueError, match=r"width_multiplier=-1.0 must be a finite number > 0"):
        models.create("resnet_tiny", width_multiplier=-1.0, rngs=rngs)
    with pytest.raises(ValueError, match=r"resnet18 has no option\(s\) widht; its options: "):
        models.create("resnet18", widht=2, rngs=rngs)
    with pytest.raises(ValueError) as error:
        models.create("resnet9", rngs=rngs)
    encoders, heads = str(error.value).split("; heads: ")
    assert "linear_classifier" not in encoders and "resnet18" in encoders
    assert "linear_classifier" in heads
