"""Blockwise NT-Xent equals the dense loss, sharded or not, and stays small in memory.

Also the kernel under it, ``jaxcl.tiled_logsumexp``, and that it stands alone.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcl import losses, tiled_logsumexp

RTOL = 1e-5
ATOL = 1e-5


def _random(shape, seed=0, scale=1.0):
    return np.asarray(np.random.default_rng(seed).normal(size=shape) * scale, np.float32)


def _value_and_grads(loss_fn, z1, z2):
    return jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))(z1, z2)


def _dense(temperature):
    return lambda z1, z2: losses.nt_xent(z1, z2, temperature=temperature, block_size=0)


def _blocked(temperature, block_size):
    return lambda z1, z2: losses.nt_xent_blockwise(
        z1, z2, temperature=temperature, block_size=block_size
    )


def _assert_same(got, expected, rtol=RTOL, atol=ATOL):
    (value, grads), (expected_value, expected_grads) = got, expected
    np.testing.assert_allclose(value, expected_value, rtol=rtol, atol=atol)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(
            np.asarray(grad, np.float32), np.asarray(expected_grad, np.float32), rtol, atol
        )


class TestEqualsDense:
    @pytest.mark.parametrize(
        ("num_examples", "block_size"),
        [(50, 8), (37, 16), (13, 4096), (16, 32), (9, 1), (1, 3)],
    )
    def test_sizes_and_blocks(self, num_examples, block_size):
        """Blocks that do not divide the 2N views: the padding is masked."""
        z1, z2 = _random((num_examples, 12), 1), _random((num_examples, 12), 2)
        _assert_same(
            _value_and_grads(_blocked(0.2, block_size), z1, z2),
            _value_and_grads(_dense(0.2), z1, z2),
        )

    @pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 2.0])
    def test_temperatures(self, temperature):
        z1, z2 = _random((21, 8), 3), _random((21, 8), 4)
        _assert_same(
            _value_and_grads(_blocked(temperature, 8), z1, z2),
            _value_and_grads(_dense(temperature), z1, z2),
        )

    def test_bfloat16_inputs(self):
        z1 = jnp.asarray(_random((19, 16), 5), jnp.bfloat16)
        z2 = jnp.asarray(_random((19, 16), 6), jnp.bfloat16)
        value, grads = _value_and_grads(_blocked(0.1, 8), z1, z2)
        assert value.dtype == jnp.float32
        assert all(grad.dtype == jnp.bfloat16 for grad in grads)
        # Both normalise in float32; the gradients are rounded to bfloat16 at the end.
        _assert_same((value, grads), _value_and_grads(_dense(0.1), z1, z2), rtol=1e-2, atol=1e-4)
        np.testing.assert_allclose(value, _dense(0.1)(z1, z2), rtol=RTOL, atol=ATOL)

    def test_automatic_choice(self, monkeypatch):
        z1, z2 = _random((8, 4), 7), _random((8, 4), 8)

        def traced(z1, z2):
            return str(jax.make_jaxpr(lambda a, b: losses.nt_xent(a, b))(z1, z2))

        assert "custom_vjp" not in traced(z1, z2)
        # 16 x 16 float32 logits are 1 KiB: above a 1 KiB limit it goes blockwise.
        monkeypatch.setattr(losses, "DENSE_LOGITS_LIMIT_BYTES", 1024)
        assert "custom_vjp" in traced(z1, z2)
        np.testing.assert_allclose(losses.nt_xent(z1, z2), _dense(0.1)(z1, z2), RTOL, ATOL)
        assert "custom_vjp" in str(
            jax.make_jaxpr(lambda a, b: losses.nt_xent(a, b, block_size=4))(z1, z2)
        )
        assert "nt_xent_blockwise" in losses.__all__


def _sharded(loss_fn, mesh, args):
    """``loss_fn(*shards, axis_name='data')`` under shard_map, and the placed args."""
    specs = (P("data"),) * len(args)
    sharded = jax.shard_map(
        lambda *shards: loss_fn(*shards, axis_name="data"),
        mesh=mesh,
        in_specs=specs,
        out_specs=P(),
    )
    placed = [jax.device_put(a, NamedSharding(mesh, s)) for a, s in zip(args, specs, strict=True)]
    return sharded, placed


def _sharded_value_and_grad(loss_fn, mesh, args):
    with jax.set_mesh(mesh):
        sharded, placed = _sharded(loss_fn, mesh, args)
        return jax.jit(jax.value_and_grad(sharded, argnums=(0, 1)))(*placed)


@pytest.mark.parametrize("block_size", [5, 4096])
def test_sharded_equals_single_device(mesh, block_size):
    """Eight devices of 6 examples each equal one device with all 48 (dense)."""
    z1, z2 = _random((48, 8), 9), _random((48, 8), 10)

    def loss_fn(z1, z2, axis_name=None):
        return losses.nt_xent_blockwise(
            z1, z2, temperature=0.3, axis_name=axis_name, block_size=block_size
        )

    _assert_same(
        _sharded_value_and_grad(loss_fn, mesh, [z1, z2]), _value_and_grads(_dense(0.3), z1, z2)
    )


def test_sharded_automatic_choice_counts_global_views(mesh, monkeypatch):
    """The size rule uses the gathered batch: 12 local x 96 global views here."""
    z1, z2 = _random((48, 8), 11), _random((48, 8), 12)

    def loss_fn(z1, z2, axis_name=None):
        return losses.nt_xent(z1, z2, temperature=0.3, axis_name=axis_name)

    def traced():
        with jax.set_mesh(mesh):
            sharded, placed = _sharded(loss_fn, mesh, [z1, z2])
            return str(jax.make_jaxpr(sharded)(*placed))

    logits_bytes = 12 * 96 * 4
    monkeypatch.setattr(losses, "DENSE_LOGITS_LIMIT_BYTES", logits_bytes + 1)
    assert "custom_vjp" not in traced()
    monkeypatch.setattr(losses, "DENSE_LOGITS_LIMIT_BYTES", logits_bytes)
    assert "custom_vjp" in traced()
    _assert_same(
        _sharded_value_and_grad(loss_fn, mesh, [z1, z2]), _value_and_grads(_dense(0.3), z1, z2)
    )


def test_jit_does_not_retrace():
    traces = []

    @jax.jit
    def step(z1, z2):
        traces.append(1)
        return jax.value_and_grad(losses.nt_xent_blockwise, argnums=(0, 1))(z1, z2, block_size=8)

    for seed in range(3):
        jax.block_until_ready(step(_random((20, 4), seed), _random((20, 4), seed + 10)))
    assert len(traces) == 1


class TestNumerics:
    def test_extreme_inputs_are_finite(self):
        cases = {
            "tiny temperature": (_random((12, 16), 13), _random((12, 16), 14), 1e-4),
            "large and shifted": (
                _random((12, 16), 15, scale=1e4) + 1e6,
                np.full((12, 16), -1e6, np.float32),
                0.1,
            ),
            "zeros": (np.zeros((12, 16), np.float32), np.zeros((12, 16), np.float32), 0.1),
            "identical rows": (np.ones((12, 16), np.float32), np.ones((12, 16), np.float32), 0.1),
        }
        for name, (z1, z2, temperature) in cases.items():
            value, grads = _value_and_grads(_blocked(temperature, 5), z1, z2)
            assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads), name
            _assert_same(
                (value, grads),
                _value_and_grads(_dense(temperature), z1, z2),
                rtol=1e-4 if temperature < 1e-3 else RTOL,
                atol=ATOL,
            )

    def test_single_example_has_only_its_positive(self):
        z = _random((1, 4), 16)
        value, grads = _value_and_grads(_blocked(0.1, 1), z, -z)
        np.testing.assert_allclose(value, 0.0, atol=1e-6)
        assert all(np.all(np.isfinite(g)) for g in grads)

    def test_masked_logsumexp_row_without_columns_is_minus_inf(self):
        anchors = jnp.ones((2, 3))
        candidates = jnp.ones((1, 3))
        value = tiled_logsumexp.masked_logsumexp(anchors, candidates, jnp.array([0, -1]), 1)
        assert value[0] == -jnp.inf
        np.testing.assert_allclose(value[1], 3.0)

        def finite_rows(anchors, candidates):
            return tiled_logsumexp.masked_logsumexp(anchors, candidates, jnp.array([0, -1]), 1)[1]

        grads = jax.grad(finite_rows, argnums=(0, 1))(anchors, candidates)
        assert all(np.all(np.isfinite(g)) for g in grads)

    def test_bad_block_size_raises(self):
        z = _random((4, 3), 17)
        with pytest.raises(ValueError, match="block_size"):
            losses.nt_xent_blockwise(z, z, block_size=0)
        with pytest.raises(ValueError, match="temperature"):
            losses.nt_xent_blockwise(z, z, temperature=-1.0)


def test_memory_is_linear_in_the_batch():
    """Doubling the batch doubles the blockwise scratch memory (dense: four times)."""

    def temp_bytes(num_examples, block_size):
        views = jax.ShapeDtypeStruct((num_examples, 128), jnp.float32)
        grad_fn = jax.value_and_grad(
            lambda a, b: losses.nt_xent(a, b, block_size=block_size), argnums=(0, 1)
        )
        compiled = jax.jit(grad_fn).lower(views, views).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    dense_logits = (2 * 4096) ** 2 * 4
    assert temp_bytes(4096, 0) >= dense_logits
    assert temp_bytes(4096, 0) > 3.5 * temp_bytes(2048, 0)
    assert temp_bytes(4096, 256) < dense_logits / 4
    assert temp_bytes(8192, 256) < 2.5 * temp_bytes(4096, 256)


def test_kernel_module_imports_nothing_of_jaxcl():
    """``jaxcl.tiled_logsumexp`` stands alone and ``jaxcl.losses`` has no import cycle."""
    with open(tiled_logsumexp.__file__) as source_file:
        source = source_file.read()
    assert "import jaxcl" not in source and "from jaxcl" not in source
    # A fresh interpreter imports the kernel without the losses, then the losses.
    code = (
        "import sys, jaxcl.tiled_logsumexp; "
        "assert 'jaxcl.losses' not in sys.modules; "
        "import jaxcl.losses as losses; assert callable(losses.nt_xent_blockwise)"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
