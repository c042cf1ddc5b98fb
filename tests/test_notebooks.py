"""The tutorials in notebooks/ run top to bottom in a fresh Jupyter kernel.

Each notebook ends with cells that assert its claims (the uniformity of points
on the circle, the subspace contrastive learning finds, the kNN accuracy
training adds, ...), so executing it checks values, not only that it runs.
"""

import os
import pathlib

import nbclient
import nbformat
import pytest

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
# A cell running longer than this fails the test (no notebook needs 3 minutes in all).
SECONDS_PER_CELL = 360
# Test-session settings a user's kernel would not have: the 8 fake devices and
# XLA's lowest optimisation level of conftest.py, the suite's compilation cache.
TEST_ONLY_VARIABLES = ("XLA_FLAGS", "JAXCL_TEST_COMPILATION_CACHE", "JAXCL_RUN")


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """TFDS data directory of the notebooks' kernels, shared: Fashion-MNIST is prepared once."""
    return str(tmp_path_factory.mktemp("notebook_tfds"))


def _execute(name, workdir, tfds_dir):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    env = {key: value for key, value in os.environ.items() if key not in TEST_ONLY_VARIABLES}
    env["TFDS_DATA_DIR"] = tfds_dir
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=SECONDS_PER_CELL,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute(env=env)
    return notebook


def _outputs(notebook, output_type=None):
    for cell in notebook.cells:
        if cell.cell_type == "code":
            for output in cell.outputs:
                if output_type is None or output.output_type == output_type:
                    yield output


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, min_plots",
    [
        ("01_losses_on_arrays.ipynb", 4),
        ("02_train_simclr_in_a_notebook.ipynb", 3),
        ("03_theory_spiked_covariance.ipynb", 2),
        ("04_use_a_trained_encoder.ipynb", 2),
    ],
)
def test_notebook_runs_top_to_bottom_with_its_plots(name, min_plots, tmp_path, tfds_dir):
    notebook = _execute(name, tmp_path, tfds_dir)
    plots = [output for output in _outputs(notebook) if "image/png" in output.get("data", {})]
    assert len(plots) >= min_plots, f"{name}: {len(plots)} PNG outputs, expected {min_plots}"
    assert not list(_outputs(notebook, "error"))


def test_committed_notebooks_carry_no_outputs():
    names = sorted(path.name for path in NOTEBOOKS.glob("*.ipynb"))
    assert names == [
        "01_losses_on_arrays.ipynb",
        "02_train_simclr_in_a_notebook.ipynb",
        "03_theory_spiked_covariance.ipynb",
        "04_use_a_trained_encoder.ipynb",
    ]
    for name in names:
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(notebook)
        assert not list(_outputs(notebook)), f"{name} is committed with outputs"
