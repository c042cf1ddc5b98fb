"""SimCLR's / MoCo's linear protocol: a head over the frozen encoder on augmented images."""

import jax
import pytest
from conftest import make_tiny_config

from jaxcl import augmented_probe
from jaxcl.augmented_probe import augmented_linear_evaluation
from jaxcl.evaluation import evaluate_state
from jaxcl.restore import restore_run
from jaxcl.run import train_and_evaluate

# 64 training images at batch 16: 4 head steps per epoch.
PROBE = {
    "eval.linear_protocol": "augmented",
    "eval.linear_epochs": 3,
    "eval.linear_batch_size": 16,
    "eval.linear_learning_rate": 16.0,  # 1.0 at batch 16: a head that learns in 12 steps
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    train_and_evaluate(make_tiny_config(num_steps=2, **PROBE), workdir)
    return workdir


def _mesh(devices):
    return jax.make_mesh((devices,), ("data",), devices=jax.devices()[:devices])


def _probe(workdir, devices, **kwargs):
    run = restore_run(workdir, mesh=_mesh(devices))
    variables = run.trainer.encoder_variables(run.state)
    return augmented_linear_evaluation(run.trainer, variables, **kwargs)


def test_eight_devices_train_the_same_head_as_one(workdir):
    one, eight = _probe(workdir, 1), _probe(workdir, 8)
    assert one["linear_top1"] == pytest.approx(eight["linear_top1"], abs=1e-6)
    assert one["linear_train_top1"] == pytest.approx(eight["linear_train_top1"], abs=1e-5)
    assert one["linear_top1"] >= 0.375  # above chance (0.25): the head learns


def test_a_head_resumed_after_a_crash_ends_where_an_uninterrupted_one_does(
    workdir, tmp_path, monkeypatch
):
    uninterrupted = _probe(workdir, 2)
    run = restore_run(workdir, mesh=_mesh(2))
    run.config.unlock()
    run.config.checkpoint_every_steps = 5  # of 12 steps
    variables = run.trainer.encoder_variables(run.state)
    real_prefetch = augmented_probe.distributed.prefetch_to_mesh

    def crash_after_ten_steps(iterator, mesh, **kwargs):
        for step, batch in enumerate(real_prefetch(iterator, mesh, **kwargs)):
            if step == 10:
                raise RuntimeError("preempted")
            yield batch

    monkeypatch.setattr(augmented_probe.distributed, "prefetch_to_mesh", crash_after_ten_steps)
    with pytest.raises(RuntimeError, match="preempted"):
        augmented_linear_evaluation(run.trainer, variables, workdir=str(tmp_path), encoder_step=2)
    heads = tmp_path / "linear_eval" / "encoder_step_2" / "checkpoints"
    assert [p.name for p in heads.iterdir()] == ["10"]
    monkeypatch.setattr(augmented_probe.distributed, "prefetch_to_mesh", real_prefetch)
    resumed = augmented_linear_evaluation(
        run.trainer, variables, workdir=str(tmp_path), encoder_step=2
    )
    assert [p.name for p in heads.iterdir()] == ["12"]
    assert resumed["linear_top1"] == pytest.approx(uninterrupted["linear_top1"], abs=1e-6)
    # A head of another encoder step is never resumed from this one.
    other = augmented_linear_evaluation(
        run.trainer, variables, workdir=str(tmp_path), encoder_step=1
    )
    assert other["linear_top1"] == pytest.approx(uninterrupted["linear_top1"], abs=1e-6)
    assert other["linear_train_top1"] == pytest.approx(uninterrupted["linear_train_top1"])


def test_evaluation_reports_the_protocol(workdir):
    run = restore_run(workdir, mesh=_mesh(8))
    results = evaluate_state(run.trainer, run.state)
    assert results["linear_protocol"] == "augmented"
    assert results["linear_top1"] == pytest.approx(_probe(workdir, 8)["linear_top1"], abs=1e-6)
