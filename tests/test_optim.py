"""LARS against SimCLR's equations by hand, masks, and schedules."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcl import configs, optim
from jaxcl.config import ConfigError, validate_config


def simclr_lars_reference(params, grads, velocity, *, lr, wd, momentum, eta):
    """One step of SimCLR's LARS (lars_optimizer.py semantics) in NumPy."""
    new_params, new_velocity = {}, {}
    for name, w in params.items():
        g = grads[name]
        excluded = w.ndim <= 1  # biases and BatchNorm variables
        if not excluded:
            g = g + wd * w
            w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
            trust = eta * w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0
        else:
            trust = 1.0
        v = momentum * velocity[name] + lr * trust * g
        new_velocity[name] = v
        new_params[name] = w - v
    return new_params, new_velocity


def test_lars_matches_simclr_equations_over_two_steps():
    rng = np.random.default_rng(0)
    params = {
        "kernel": rng.normal(size=(3, 4)),
        "bias": rng.normal(size=(4,)),
        "bn_scale": rng.normal(size=(4,)),
        "zero_kernel": np.zeros((2, 2)),
    }
    lr, wd, momentum, eta = 0.3, 1e-4, 0.9, 1e-3
    optimizer = optim.create_optimizer(
        "lars", lr, weight_decay=wd, momentum=momentum, trust_coefficient=eta
    )
    jax_params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    state = optimizer.init(jax_params)
    expected_params, velocity = params, {k: np.zeros_like(v) for k, v in params.items()}
    for step in range(2):
        grads = {k: rng.normal(size=v.shape) for k, v in params.items()}
        updates, state = optimizer.update(
            {k: jnp.asarray(v, jnp.float32) for k, v in grads.items()}, state, jax_params
        )
        jax_params = optax.apply_updates(jax_params, updates)
        expected_params, velocity = simclr_lars_reference(
            expected_params, grads, velocity, lr=lr, wd=wd, momentum=momentum, eta=eta
        )
        for name in params:
            np.testing.assert_allclose(
                jax_params[name],
                expected_params[name],
                rtol=1e-5,
                atol=1e-6,
                err_msg=f"{name} at step {step}",
            )


def test_decay_mask_excludes_vectors():
    mask = optim.decay_mask({"conv": jnp.ones((3, 3, 1, 2)), "bias": jnp.ones(2)})
    assert mask == {"conv": True, "bias": False}


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_weight_decay_reaches_vectors_only_when_asked(name):
    # With zero gradients only the decay moves a parameter: MoCo v3's AdamW
    # ('all') shrinks the bias and the kernel alike, the default only the kernel.
    params = {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 2.0)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    lr, wd = 0.1, 0.5
    moved = {}
    for decay in ("matrices", "all"):
        optimizer = optim.create_optimizer(name, lr, weight_decay=wd, momentum=0.0, decay=decay)
        updates, _ = optimizer.update(zeros, optimizer.init(params), params)
        moved[decay] = optax.apply_updates(params, updates)
    shrunk = 2.0 * (1 - lr * wd)  # AdamW: w -= lr wd w; SGD: w -= lr (wd w)
    np.testing.assert_allclose(moved["all"]["bias"], shrunk, rtol=1e-6)
    np.testing.assert_allclose(moved["all"]["kernel"], shrunk, rtol=1e-6)
    np.testing.assert_array_equal(moved["matrices"]["bias"], params["bias"])
    np.testing.assert_allclose(moved["matrices"]["kernel"], shrunk, rtol=1e-6)
    with pytest.raises(ValueError, match="decay='some' is unknown"):
        optim.create_optimizer(name, lr, decay="some")


def test_moco_v3_vit_recipe_decays_every_parameter():
    assert configs.get_config("mocov3_vit_imagenet").weight_decay_on == "all"
    config = configs.get_config("simclr_fashion_mnist")
    assert config.weight_decay_on == "matrices"
    config.unlock()
    config.weight_decay_on = "biases"
    with pytest.raises(ConfigError, match="weight_decay_on='biases' is unknown"):
        validate_config(config, num_devices=1, check_data_files=False)


def test_trust_ratio_mask_leaves_the_probe_to_plain_momentum():
    params = {"encoder": {"conv": jnp.ones((3, 3, 1, 2))}, "probe": {"kernel": jnp.ones((4, 2))}}
    assert optim.trust_ratio_mask(params) == {
        "encoder": {"conv": True},
        "probe": {"kernel": False},
    }


@pytest.mark.parametrize(
    ("scaling", "expected"), [("linear", 0.3 * 4096 / 256), ("sqrt", 0.075 * 64.0), ("none", 0.3)]
)
def test_learning_rate_scaling(scaling, expected):
    base = 0.075 if scaling == "sqrt" else 0.3
    assert optim.scaled_learning_rate(base, 4096, scaling) == pytest.approx(expected)


def test_schedule_warms_up_then_decays_to_zero():
    schedule = optim.learning_rate_schedule(1.0, total_steps=100, warmup_steps=10)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(1.0)
    assert float(schedule(55)) == pytest.approx(0.5, abs=1e-6)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="optimizer='adam'"):
        optim.create_optimizer("adam", 0.1)
    with pytest.raises(ValueError, match="learning_rate_scaling"):
        optim.scaled_learning_rate(0.1, 256, "log")
