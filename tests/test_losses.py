"""Tests of jaxcl.losses against NumPy references, optax, and their sharded forms."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcl import losses

RTOL = 1e-5
ATOL = 1e-5


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _log_softmax_row(logits, index, excluded):
    kept = [logits[k] for k in range(len(logits)) if k not in excluded]
    top = max(kept)
    return logits[index] - (top + np.log(np.sum(np.exp(np.array(kept) - top))))


def numpy_nt_xent(z1, z2, temperature):
    views = np.concatenate([_unit(z1), _unit(z2)])
    n = len(z1)
    logits = views @ views.T / temperature
    total = 0.0
    for a in range(2 * n):
        positive = (a + n) % (2 * n)
        total -= _log_softmax_row(logits[a], positive, excluded={a})
    return total / (2 * n)


def numpy_info_nce(q, k, queue, temperature):
    q, k = _unit(q), _unit(k)
    total = 0.0
    for i in range(len(q)):
        if queue is None:
            logits = q[i] @ k.T / temperature
            total -= _log_softmax_row(logits, i, excluded=set())
        else:
            logits = np.concatenate([[q[i] @ k[i]], _unit(queue) @ q[i]]) / temperature
            total -= _log_softmax_row(logits, 0, excluded=set())
    return total / len(q)


def numpy_alignment(z1, z2, alpha):
    return np.mean(np.linalg.norm(_unit(z1) - _unit(z2), axis=1) ** alpha)


def numpy_uniformity(z, t):
    z = _unit(z)
    values = [
        np.exp(-t * np.sum((z[i] - z[j]) ** 2)) for i, j in itertools.combinations(range(len(z)), 2)
    ]
    return np.log(np.mean(values))


def numpy_sup_con(z, labels, temperature, anchors_without_positives="exclude"):
    n, v, _ = z.shape
    flat = _unit(z).reshape(n * v, -1)
    flat_labels = np.repeat(labels, v)
    logits = flat @ flat.T / temperature
    losses_per_anchor = []
    for a in range(n * v):
        positives = [p for p in range(n * v) if p != a and flat_labels[p] == flat_labels[a]]
        if not positives:
            # The official code (SupContrast since Dec 2023) scores such an anchor 0.
            if anchors_without_positives == "zero":
                losses_per_anchor.append(0.0)
            continue
        terms = [_log_softmax_row(logits[a], p, excluded={a}) for p in positives]
        losses_per_anchor.append(-np.mean(terms))
    return np.mean(losses_per_anchor) if losses_per_anchor else 0.0


def numpy_official_alpha(distance, alpha_type, temperature, alpha_exponent, inverse_exponent):
    """luckmatters' unnormalised w (loss/nt_xent.py): r**a first, then exp or inverse."""
    w = distance**alpha_exponent
    if alpha_type == "exp":
        return np.exp(-w / temperature)
    if alpha_type == "inverse":
        return 1 / (w + temperature) ** inverse_exponent
    return np.ones_like(distance)


def numpy_pre_release_alpha(distance, alpha_type, temperature, power):
    """jaxcl's weights before alpha_exponent/inverse_exponent: one ``power`` keyword."""
    if alpha_type == "exp":
        return np.exp(-(distance**power) / temperature)
    if alpha_type == "inverse":
        return 1 / (distance + temperature) ** power
    return np.ones_like(distance)


def numpy_alpha_cl(z1, z2, weight_fn):
    """alpha-CL with per-anchor normalised weights ``weight_fn(r)`` over the negatives."""
    views = np.concatenate([_unit(z1), _unit(z2)])
    n = len(z1)
    similarity = views @ views.T
    total = 0.0
    for a in range(2 * n):
        positive = (a + n) % (2 * n)
        negatives = [k for k in range(2 * n) if k not in (a, positive)]
        weight = weight_fn(np.maximum(1 - similarity[a, negatives], 0))
        weight /= weight.sum()
        total += np.sum(weight * similarity[a, negatives]) - similarity[a, positive]
    return total / (2 * n)


def _random(shape, seed=0, scale=1.0):
    return np.asarray(np.random.default_rng(seed).normal(size=shape) * scale, np.float32)


class TestAgainstNumpy:
    @pytest.mark.parametrize("temperature", [0.1, 0.5])
    def test_nt_xent(self, temperature):
        z1, z2 = _random((6, 5), 1), _random((6, 5), 2)
        expected = numpy_nt_xent(z1, z2, temperature)
        got = losses.nt_xent(z1, z2, temperature=temperature)
        np.testing.assert_allclose(got, expected, rtol=RTOL)

    def test_nt_xent_matches_optax(self):
        z1, z2 = _random((7, 4), 3), _random((7, 4), 4)
        labels = jnp.concatenate([jnp.arange(7)] * 2)
        expected = optax.losses.ntxent(jnp.concatenate([z1, z2]), labels, temperature=0.2)
        np.testing.assert_allclose(
            losses.nt_xent(z1, z2, temperature=0.2), expected, rtol=RTOL, atol=ATOL
        )

    @pytest.mark.parametrize("with_queue", [True, False])
    def test_info_nce(self, with_queue):
        q, k = _random((5, 6), 5), _random((5, 6), 6)
        queue = _random((11, 6), 7) if with_queue else None
        expected = numpy_info_nce(q, k, queue, 0.2)
        np.testing.assert_allclose(losses.info_nce(q, k, queue, temperature=0.2), expected, RTOL)

    @pytest.mark.parametrize("alpha", [2.0, 1.0, 3.0])
    def test_alignment(self, alpha):
        z1, z2 = _random((9, 4), 8), _random((9, 4), 9)
        np.testing.assert_allclose(
            losses.alignment(z1, z2, alpha=alpha), numpy_alignment(z1, z2, alpha), rtol=RTOL
        )

    @pytest.mark.parametrize("t", [2.0, 0.5])
    def test_uniformity(self, t):
        z = _random((10, 3), 10)
        np.testing.assert_allclose(
            losses.uniformity(z, t=t), numpy_uniformity(z, t), rtol=RTOL, atol=ATOL
        )

    def test_sup_con(self):
        z = _random((6, 2, 5), 11)
        labels = np.array([0, 1, 0, 2, 1, 3])
        np.testing.assert_allclose(
            losses.sup_con(z, labels, temperature=0.1),
            numpy_sup_con(z, labels, 0.1),
            rtol=RTOL,
        )

    def test_sup_con_hand_built_anchor_without_positive(self):
        """Three unit vectors at T = 1; the third view's label is its own.

        Anchor 0 (1, 0) sees its positive (0, 1) at s = 0 and (-1, 0) at s = -1:
        l_0 = log(1 + e^-1). Anchor 1 sees both others at s = 0: l_1 = log 2.
        Anchor 2 has no positive.
        """
        z = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[-1.0, 0.0]]], np.float32)
        labels = np.array([0, 0, 1])
        total = np.log1p(np.exp(-1.0)) + np.log(2.0)
        for mode, expected in (("exclude", total / 2), ("zero", total / 3)):
            value = losses.sup_con(z, labels, temperature=1.0, anchors_without_positives=mode)
            np.testing.assert_allclose(value, expected, rtol=1e-6, err_msg=mode)
        np.testing.assert_allclose(total / 2, 0.5032044, rtol=1e-6)
        np.testing.assert_allclose(total / 3, 0.3354696, rtol=1e-6)

    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_sup_con_zero_is_exclude_times_fraction_with_positives(self, seed):
        rng = np.random.default_rng(seed)
        z = _random((12, 1, 6), 50 + seed)
        labels = rng.integers(0, 8, size=12)
        with_positive = np.array([np.sum(labels == label) > 1 for label in labels])
        assert 0 < with_positive.sum() < 12, "the case needs anchors of both kinds"
        exclude = losses.sup_con(z, labels, temperature=0.2)
        zero = losses.sup_con(z, labels, temperature=0.2, anchors_without_positives="zero")
        np.testing.assert_allclose(zero, exclude * with_positive.mean(), rtol=RTOL)
        np.testing.assert_allclose(
            zero, numpy_sup_con(z, labels, 0.2, anchors_without_positives="zero"), rtol=RTOL
        )

    def test_sup_con_modes_agree_with_two_views(self):
        z = _random((6, 2, 5), 11)
        labels = np.array([0, 1, 0, 2, 1, 3])
        np.testing.assert_allclose(
            losses.sup_con(z, labels, anchors_without_positives="zero"),
            losses.sup_con(z, labels),
            rtol=RTOL,
        )

    def test_sup_con_anchor_without_positive_gives_no_nan(self):
        z = _random((4, 1, 5), 12)
        value = losses.sup_con(z, np.array([0, 1, 2, 0]))
        assert np.isfinite(value)
        np.testing.assert_allclose(
            value, numpy_sup_con(z, np.array([0, 1, 2, 0]), 0.1), rtol=RTOL, atol=ATOL
        )
        grads = jax.grad(losses.sup_con)(z, np.array([0, 1, 2, 3]))
        assert np.all(np.isfinite(grads))
        assert float(losses.sup_con(z, np.array([0, 1, 2, 3]))) == 0.0

    @pytest.mark.parametrize("alpha_type", ["exp", "inverse", "constant"])
    @pytest.mark.parametrize(
        ("alpha_exponent", "inverse_exponent"), [(1.0, 1.0), (2.0, 1.0), (1.5, 2.0), (2.0, 0.5)]
    )
    def test_alpha_cl(self, alpha_type, alpha_exponent, inverse_exponent):
        z1, z2 = _random((5, 4), 13), _random((5, 4), 14)
        expected = numpy_alpha_cl(
            z1,
            z2,
            lambda r: numpy_official_alpha(r, alpha_type, 0.5, alpha_exponent, inverse_exponent),
        )
        got = losses.alpha_cl(
            z1,
            z2,
            alpha_type=alpha_type,
            temperature=0.5,
            alpha_exponent=alpha_exponent,
            inverse_exponent=inverse_exponent,
        )
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)

    @pytest.mark.parametrize("alpha_type", ["exp", "inverse"])
    @pytest.mark.parametrize(("alpha_exponent", "inverse_exponent"), [(2.0, 1.5), (0.5, 3.0)])
    def test_alpha_weights_match_official_formula(
        self, alpha_type, alpha_exponent, inverse_exponent
    ):
        """The normalised importance is luckmatters' w = f(r**a), in float64 NumPy."""
        z1, z2 = _random((6, 4), 60), _random((6, 4), 61)
        views = np.concatenate([_unit(z1), _unit(z2)])
        similarity = views @ views.T
        index = np.arange(12)
        is_negative = (index[:, None] != index) & ((index[:, None] + 6) % 12 != index)
        got = losses._pairwise_importance(
            jnp.asarray(similarity, jnp.float32),
            jnp.asarray(is_negative),
            alpha_type,
            0.3,
            alpha_exponent,
            inverse_exponent,
        )
        distance = np.maximum(1 - similarity, 0)
        weight = numpy_official_alpha(distance, alpha_type, 0.3, alpha_exponent, inverse_exponent)
        weight = np.where(is_negative, weight, 0.0)
        np.testing.assert_allclose(got, weight / weight.sum(axis=1, keepdims=True), rtol=1e-5)
        # Spot check one entry against the formula written out by hand.
        r = 1 - similarity[0, 1]
        if alpha_type == "inverse":
            w01 = (r**alpha_exponent + 0.3) ** -inverse_exponent
        else:
            w01 = np.exp(-(r**alpha_exponent) / 0.3)
        np.testing.assert_allclose(got[0, 1], w01 / weight[0].sum(), rtol=1e-5)

    @pytest.mark.parametrize(
        ("alpha_type", "power", "keywords"),
        [
            ("exp", 1.0, {}),
            ("inverse", 1.0, {}),
            ("constant", 1.0, {}),
            ("exp", 2.0, {"alpha_exponent": 2.0}),
            ("inverse", 2.0, {"inverse_exponent": 2.0}),
        ],
    )
    def test_alpha_cl_defaults_reproduce_the_power_keyword(self, alpha_type, power, keywords):
        """Defaults are the former power=1; former power=p is alpha_exponent=p for 'exp'
        (exp(-r**p / tau)) and inverse_exponent=p for 'inverse' (1 / (r + tau)**p)."""
        z1, z2 = _random((5, 4), 13), _random((5, 4), 14)
        expected = numpy_alpha_cl(
            z1, z2, lambda r: numpy_pre_release_alpha(r, alpha_type, 0.5, power)
        )
        got = losses.alpha_cl(z1, z2, alpha_type=alpha_type, **keywords)
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)

    def test_quadratic_is_constant_alpha(self):
        z1, z2 = _random((5, 4), 15), _random((5, 4), 16)
        expected = numpy_alpha_cl(z1, z2, np.ones_like)
        np.testing.assert_allclose(losses.quadratic(z1, z2), expected, rtol=RTOL)

    def test_alpha_exp_has_infonce_negative_gradient(self):
        """With power 1, alpha-CL 'exp' weights are InfoNCE's softmax over negatives."""
        z1, z2 = _random((4, 3), 17), _random((4, 3), 18)
        views = jnp.concatenate([losses.l2_normalize(z1), losses.l2_normalize(z2)])
        similarity = views @ views.T
        negatives = np.array([k for k in range(8) if k not in (0, 4)])
        weights = jax.nn.softmax(similarity[0, negatives] / 0.3)
        importance = losses._pairwise_importance(
            similarity[:1], jnp.isin(jnp.arange(8), negatives)[None], "exp", 0.3, 1.0, 1.0
        )[0, negatives]
        np.testing.assert_allclose(importance, weights, rtol=RTOL)


class TestNumerics:
    def test_bfloat16_inputs_give_float32_loss(self):
        z1, z2 = _random((8, 16), 19), _random((8, 16), 20)
        value = losses.nt_xent(jnp.asarray(z1, jnp.bfloat16), jnp.asarray(z2, jnp.bfloat16))
        assert value.dtype == jnp.float32
        np.testing.assert_allclose(value, numpy_nt_xent(z1, z2, 0.1), rtol=2e-2)

    def test_tiny_temperature_is_finite(self):
        z1, z2 = _random((8, 16), 21), _random((8, 16), 22)
        value, grads = jax.value_and_grad(losses.nt_xent)(z1, z2, temperature=1e-4)
        assert np.isfinite(value) and np.all(np.isfinite(grads))

    def test_zero_embeddings_are_finite(self):
        zeros = np.zeros((4, 3), np.float32)
        for loss in (losses.nt_xent, losses.alignment, losses.quadratic):
            value, grads = jax.value_and_grad(loss)(zeros, zeros)
            assert np.isfinite(value) and np.all(np.isfinite(grads)), loss.__name__
        assert np.isfinite(losses.uniformity(zeros))

    def test_alignment_fractional_alpha_gradient_at_zero_distance(self):
        z = _random((4, 3), 23)
        grads = jax.grad(losses.alignment)(z, z, alpha=1.0)
        assert np.all(np.isfinite(grads))

    def test_bad_inputs_raise_clear_errors(self):
        z = _random((4, 3), 24)
        with pytest.raises(ValueError, match="same shape"):
            losses.nt_xent(z, z[:3])
        with pytest.raises(ValueError, match="temperature must be > 0"):
            losses.nt_xent(z, z, temperature=0.0)
        with pytest.raises(ValueError, match="2 dimensions"):
            losses.nt_xent(z[None], z[None])
        with pytest.raises(ValueError, match="alpha_type"):
            losses.alpha_cl(z, z, alpha_type="cosine")
        with pytest.raises(ValueError, match="alpha_exponent must be > 0"):
            losses.alpha_cl(z, z, alpha_exponent=0.0)
        with pytest.raises(ValueError, match="inverse_exponent must be > 0"):
            losses.alpha_cl(z, z, alpha_type="inverse", inverse_exponent=-1.0)
        with pytest.raises(ValueError, match=r"alpha_eps=0\.1 is not supported"):
            losses.alpha_cl(z, z, alpha_eps=0.1)
        with pytest.raises(ValueError, match="anchors_without_positives='drop' is unknown"):
            losses.sup_con(z[:, None], np.arange(4), anchors_without_positives="drop")
        with pytest.raises(ValueError, match="labels must have shape"):
            losses.sup_con(z[:, None], np.arange(3))
        with pytest.raises(ValueError, match="feature dim"):
            losses.info_nce(z, z, np.ones((5, 7), np.float32))
        with pytest.raises(ValueError, match="floating"):
            losses.nt_xent(np.ones((4, 3), np.int32), np.ones((4, 3), np.int32))


embedding_arrays = st.integers(min_value=2, max_value=9).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.integers(min_value=1, max_value=6),
        st.integers(min_value=0, max_value=2**31 - 1),
    )
)


class TestProperties:
    @settings(max_examples=6, deadline=None)
    @given(embedding_arrays, st.floats(min_value=0.05, max_value=5.0))
    def test_permutation_and_scale_invariance(self, shape_seed, scale):
        n, d, seed = shape_seed
        z1, z2 = _random((n, d), seed), _random((n, d), seed + 1)
        permutation = np.random.default_rng(seed).permutation(n)
        labels = np.random.default_rng(seed).integers(0, 3, size=n)
        stacked = np.stack([z1, z2], axis=1)
        cases = {
            "nt_xent": lambda a, b, _: losses.nt_xent(a, b, temperature=0.5),
            "alpha_cl": lambda a, b, _: losses.alpha_cl(a, b),
            "quadratic": lambda a, b, _: losses.quadratic(a, b),
            "alignment": lambda a, b, _: losses.alignment(a, b),
            "uniformity": lambda a, b, _: losses.uniformity(jnp.concatenate([a, b])),
            "info_nce": lambda a, b, _: losses.info_nce(a, b),
            "sup_con": lambda a, b, y: losses.sup_con(jnp.stack([a, b], axis=1), y),
        }
        for name, loss in cases.items():
            loss = jax.jit(loss)  # one compile per shape, not one per operation
            value = loss(z1, z2, labels)
            assert np.isfinite(value), name
            permuted = loss(z1[permutation], z2[permutation], labels[permutation])
            np.testing.assert_allclose(permuted, value, rtol=1e-4, atol=1e-5, err_msg=name)
            scaled = loss(z1 * scale, z2 * scale, labels)
            np.testing.assert_allclose(scaled, value, rtol=1e-4, atol=1e-5, err_msg=name)
        assert np.isfinite(losses.sup_con(stacked, labels))

    @settings(max_examples=6, deadline=None)
    @given(embedding_arrays, st.floats(min_value=-1e6, max_value=1e6))
    def test_finite_for_large_and_constant_inputs(self, shape_seed, offset):
        n, d, seed = shape_seed
        z1 = _random((n, d), seed, scale=1e4) + offset
        z2 = np.full((n, d), offset, np.float32)
        for loss in (losses.nt_xent, losses.alpha_cl, losses.alignment, losses.info_nce):
            value, grads = jax.jit(jax.value_and_grad(loss))(z1, z2)
            assert np.isfinite(value) and np.all(np.isfinite(grads)), loss.__name__


def _sharded_value_and_grad(loss_fn, mesh, args, specs, argnums):
    """Value and gradient of ``loss_fn(*args, axis_name='data')`` under shard_map."""
    sharded = jax.shard_map(
        lambda *shards: loss_fn(*shards, axis_name="data"),
        mesh=mesh,
        in_specs=specs,
        out_specs=P(),
    )
    with jax.set_mesh(mesh):
        placed = [
            jax.device_put(a, NamedSharding(mesh, s)) for a, s in zip(args, specs, strict=True)
        ]
        return jax.jit(jax.value_and_grad(sharded, argnums=argnums))(*placed)


SHARDED_CASES = {
    "nt_xent": (lambda z1, z2, **kw: losses.nt_xent(z1, z2, temperature=0.2, **kw), 2),
    "alpha_cl_exp": (lambda z1, z2, **kw: losses.alpha_cl(z1, z2, alpha_type="exp", **kw), 2),
    "alpha_cl_inverse": (
        lambda z1, z2, **kw: losses.alpha_cl(
            z1, z2, alpha_type="inverse", alpha_exponent=1.5, inverse_exponent=2.0, **kw
        ),
        2,
    ),
    "quadratic": (losses.quadratic, 2),
    "alignment": (lambda z1, z2, **kw: losses.alignment(z1, z2, alpha=1.5, **kw), 2),
    "uniformity": (losses.uniformity, 1),
    "info_nce_in_batch": (lambda q, k, **kw: losses.info_nce(q, k, temperature=0.3, **kw), 2),
}


class TestShardedEqualsSingleDevice:
    """Eight devices, each with a shard, equal one device with the whole batch."""

    @pytest.mark.parametrize("name", sorted(SHARDED_CASES))
    def test_value_and_gradients(self, mesh, name):
        loss_fn, num_inputs = SHARDED_CASES[name]
        args = [_random((16, 8), 30 + i) for i in range(num_inputs)]
        argnums = tuple(range(num_inputs))
        expected_value, expected_grads = jax.value_and_grad(loss_fn, argnums=argnums)(*args)
        value, grads = _sharded_value_and_grad(
            loss_fn, mesh, args, (P("data"),) * num_inputs, argnums
        )
        np.testing.assert_allclose(value, expected_value, rtol=RTOL, atol=ATOL)
        for got, expected in zip(grads, expected_grads, strict=True):
            np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)

    def test_info_nce_with_replicated_queue(self, mesh):
        def loss_fn(q, k, queue, axis_name=None):
            return losses.info_nce(q, k, queue, temperature=0.2, axis_name=axis_name)

        args = [_random((16, 8), 40), _random((16, 8), 41), _random((24, 8), 42)]
        expected_value, expected_grads = jax.value_and_grad(loss_fn, argnums=(0, 1))(*args)
        value, grads = _sharded_value_and_grad(
            loss_fn, mesh, args, (P("data"), P("data"), P()), (0, 1)
        )
        np.testing.assert_allclose(value, expected_value, rtol=RTOL, atol=ATOL)
        for got, expected in zip(grads, expected_grads, strict=True):
            np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)

    @pytest.mark.parametrize(
        ("num_views", "anchors_without_positives"), [(2, "exclude"), (1, "exclude"), (1, "zero")]
    )
    def test_sup_con(self, mesh, num_views, anchors_without_positives):
        def loss_fn(z, labels, axis_name=None):
            return losses.sup_con(
                z,
                labels,
                temperature=0.2,
                anchors_without_positives=anchors_without_positives,
                axis_name=axis_name,
            )

        z = _random((16, num_views, 8), 43)
        # With one view, labels 4..7 are each used once: anchors without positives,
        # spread over several devices, so the global counts matter.
        labels = np.array([0, 4, 1, 0, 5, 2, 1, 6, 3, 2, 3, 7, 0, 1, 2, 3], np.int32)
        expected_value, expected_grad = jax.value_and_grad(loss_fn)(z, labels)
        value, (grad,) = _sharded_value_and_grad(
            loss_fn, mesh, [z, labels], (P("data"), P("data")), (0,)
        )
        np.testing.assert_allclose(value, expected_value, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(grad, expected_grad, rtol=RTOL, atol=ATOL)


def test_repeated_calls_do_not_retrace():
    traces = []

    @jax.jit
    def step(z1, z2):
        traces.append(1)
        return losses.nt_xent(z1, z2) + losses.uniformity(z1) + losses.alpha_cl(z1, z2)

    for seed in range(3):
        step(_random((8, 4), seed), _random((8, 4), seed + 10))
    assert len(traces) == 1
