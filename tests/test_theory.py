"""Small seeded versions of the theory experiments, checking the direction of each claim.

Every test is deterministic (fixed seeds) and sized for a 2-core CPU: the whole
file runs in well under a minute. Where a claim is a property of a closed form
(PCA, the linear contrastive loss), the test uses the closed form; gradient
training is tested separately against those closed forms.
"""

import ast
import inspect

import jax
import jax.numpy as jnp
import matplotlib
import matplotlib.image
import numpy as np
import pytest
from matplotlib.colors import to_rgb

from jaxcl import losses
from jaxcl.theory import align_uniform, alpha_cl, learners, spiked_covariance
from jaxcl.theory.downstream import (
    knn_classification_probe,
    linear_classification_probe,
    linear_regression_probe,
)
from jaxcl.theory.model import (
    make_spiked_covariance,
    masked_views,
    noise_variances,
    random_masks,
)
from jaxcl.theory.subspace import (
    random_subspace,
    row_space_basis,
    sin_theta_distance,
    subspace_distance,
)


def _closed_form_contrastive(x, rank):
    M = learners.expected_masked_cross_covariance(x)
    return learners.linear_contrastive_closed_form(M, rank)


# --- sin-theta distance --------------------------------------------------------


def test_sin_theta_of_truth_is_zero_and_of_random_subspace_is_large():
    rng = np.random.default_rng(0)
    dim, rank = 60, 4
    U_star = random_subspace(rng, dim, rank)
    assert sin_theta_distance(U_star, U_star) == pytest.approx(0.0, abs=1e-12)
    # Any encoder with the same row space is the same representation.
    mixing = rng.standard_normal((rank, rank))
    assert subspace_distance(U_star, mixing @ U_star.T) == pytest.approx(0.0, abs=1e-9)
    random_distances = [
        sin_theta_distance(U_star, random_subspace(rng, dim, rank)) for _ in range(20)
    ]
    # E||P - Q||_F^2 / 2 = r (1 - r / d) for a Haar-random subspace.
    assert np.mean(np.square(random_distances)) == pytest.approx(rank * (1 - rank / dim), rel=0.1)
    assert min(random_distances) > 1.5


def test_sin_theta_of_orthogonal_subspaces_is_sqrt_rank():
    basis = np.eye(6)
    assert sin_theta_distance(basis[:, :2], basis[:, 2:4]) == pytest.approx(np.sqrt(2))
    U = row_space_basis(np.random.default_rng(1).standard_normal((3, 10)))
    np.testing.assert_allclose(U.T @ U, np.eye(3), atol=1e-12)


# --- model and augmentation -------------------------------------------------------


def test_masks_are_complementary_zero_one_diagonals():
    x = np.random.default_rng(0).standard_normal((64, 30)).astype(np.float32)
    view1, view2 = np.asarray(jax.jit(masked_views)(jax.random.key(1), x))
    np.testing.assert_allclose(view1 + view2, x, atol=1e-6)
    assert np.abs(view1 * view2).max() == 0.0
    assert 0 < np.count_nonzero(view1) < x.size
    masks = jax.jit(random_masks, static_argnums=(1, 2))(jax.random.key(2), (4000, 25), 0.3)
    assert set(np.unique(np.asarray(masks))) == {0.0, 1.0}
    assert float(masks.mean()) == pytest.approx(0.3, abs=0.01)


def test_noise_variances_keep_mean_and_set_ratio():
    homoskedastic = noise_variances(40, noise_std=1.5)
    np.testing.assert_allclose(homoskedastic, 2.25)
    heteroskedastic = noise_variances(40, noise_std=1.5, noise_ratio=50.0)
    assert heteroskedastic.mean() == pytest.approx(2.25)
    assert heteroskedastic.max() / heteroskedastic.min() == pytest.approx(50.0)
    with pytest.raises(ValueError, match="noise_ratio"):
        noise_variances(10, noise_ratio=0.5)


def test_sample_covariance_matches_the_model():
    model = make_spiked_covariance(8, 2, seed=3, noise_ratio=10.0)
    x, z = model.sample(0, 40000)
    np.testing.assert_allclose(np.cov(x.T), model.covariance(), atol=0.15)
    np.testing.assert_allclose(model.core_basis.T @ model.core_basis, np.eye(2), atol=1e-12)
    assert z.shape == (40000, 2)
    np.testing.assert_array_equal(model.sample(0, 5)[0], model.sample(0, 5)[0])


# --- learners: identities and closed forms ---------------------------------------


def test_expected_masked_cross_covariance_is_the_average_over_masks():
    x = np.asarray(make_spiked_covariance(6, 2, seed=0).sample(0, 20)[0], np.float64)
    rng = np.random.default_rng(0)
    total = np.zeros((6, 6))
    draws = 4000
    for _ in range(draws):
        masks = rng.random(x.shape) < 0.5
        a, b = x * masks, x * ~masks
        n = len(x)
        positive = a.T @ b / n
        negative = (np.outer(a.sum(0), b.sum(0)) - a.T @ b) / (n * (n - 1))
        total += (positive - negative + (positive - negative).T) / 2
    M = learners.expected_masked_cross_covariance(x)
    np.testing.assert_allclose(total / draws, M, atol=0.03 * np.abs(M).max())


def test_linear_contrastive_loss_is_trace_form():
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((2, 12, 7))
    W = rng.standard_normal((3, 7))
    n = len(x1)
    M = (x1.T @ x2 - (np.outer(x1.sum(0), x2.sum(0)) - x1.T @ x2) / (n - 1)) / n
    expected = -np.trace(W @ M @ W.T) + 0.35 * np.sum((W @ W.T) ** 2)
    loss = learners.linear_contrastive_loss(
        jnp.asarray(W), jnp.asarray(x1), jnp.asarray(x2), regularization=0.7
    )
    assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_trained_linear_contrastive_encoder_reaches_the_closed_form():
    model = make_spiked_covariance(20, 2, seed=0, noise_ratio=30.0)
    x, _ = model.sample(1, 600)
    W_trained = learners.linear_contrastive_encoder(x, 2, seed=0, steps=400)
    W_closed = _closed_form_contrastive(x, 2)
    assert sin_theta_distance(row_space_basis(W_closed), row_space_basis(W_trained)) < 0.05
    # The penalty fixes the scale too: singular values sqrt(mu / lambda).
    np.testing.assert_allclose(
        np.linalg.svd(W_trained, compute_uv=False),
        np.linalg.svd(W_closed, compute_uv=False),
        rtol=0.05,
    )


def test_autoencoder_recovers_the_pca_subspace():
    model = make_spiked_covariance(20, 2, seed=1, noise_ratio=10.0)
    x, _ = model.sample(1, 600)
    W_autoencoder = learners.autoencoder_encoder(x, 2, seed=0, steps=400)
    assert subspace_distance(row_space_basis(learners.pca_encoder(x, 2)), W_autoencoder) < 0.05


# --- Experiment 1: claims of Ji et al. ---------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_contrastive_beats_pca_under_heteroskedastic_noise(seed):
    model = make_spiked_covariance(50, 3, seed=seed, noise_ratio=100.0)
    x, _ = model.sample(seed + 1000, 2000)
    contrastive = subspace_distance(model.core_basis, _closed_form_contrastive(x, 3))
    pca = subspace_distance(model.core_basis, learners.pca_encoder(x, 3))
    assert contrastive < 0.3
    assert pca > contrastive + 0.4


@pytest.mark.parametrize("seed", [0, 1])
def test_methods_are_close_under_homoskedastic_noise(seed):
    model = make_spiked_covariance(50, 3, seed=seed, noise_ratio=1.0)
    x, _ = model.sample(seed + 1000, 2000)
    contrastive = subspace_distance(model.core_basis, _closed_form_contrastive(x, 3))
    pca = subspace_distance(model.core_basis, learners.pca_encoder(x, 3))
    assert abs(contrastive - pca) < 0.1
    assert max(contrastive, pca) < 0.3


def test_contrastive_bias_shrinks_with_dimension_while_pca_stays_biased():
    errors = {}
    for dim in (20, 80):
        model = make_spiked_covariance(dim, 3, seed=0, noise_ratio=100.0)
        x, _ = model.sample(1000, 40 * dim)
        errors[dim] = (
            subspace_distance(model.core_basis, _closed_form_contrastive(x, 3)),
            subspace_distance(model.core_basis, learners.pca_encoder(x, 3)),
        )
    assert errors[80][0] < errors[20][0] - 0.05
    assert errors[80][1] > 0.5 and errors[20][1] > 0.5


@jax.jit
def _sup_con_and_nt_xent(z1, z2):
    unique = -1 - jnp.arange(z1.shape[0])
    sup = losses.sup_con(jnp.stack([z1, z2], axis=1), unique, temperature=0.5)
    return sup, losses.nt_xent(z1, z2, temperature=0.5)


def test_sup_con_without_labels_is_nt_xent():
    # How sup_con_encoder handles unlabelled examples: a label of their own.
    z1, z2 = jax.random.normal(jax.random.key(0), (2, 16, 5))
    sup, nt_xent = _sup_con_and_nt_xent(z1, z2)
    assert float(sup) == pytest.approx(float(nt_xent), rel=1e-5)


def _label_task_accuracies(W, model, source, transfer):
    x_probe, z_probe = model.sample(2000, 1000)
    x_test, z_test = model.sample(3000, 2000)
    return [
        linear_classification_probe(
            x_probe @ W.T,
            spiked_covariance.sign_pattern_labels(z_probe, features),
            x_test @ W.T,
            spiked_covariance.sign_pattern_labels(z_test, features),
        )
        for features in (source, transfer)
    ]


def test_labels_help_in_domain_and_hurt_transfer():
    model = make_spiked_covariance(30, 6, seed=0, signal_std=(3, 3, 3, 2, 2, 2))
    x, z = model.sample(1000, 1500)
    source, transfer = (3, 4, 5), (0, 1, 2)
    labels = spiked_covariance.sign_pattern_labels(z, source)
    results = {}
    for fraction in (0.0, 1.0):
        linear = learners.linear_contrastive_closed_form(
            learners.supervised_contrastive_matrix(x, labels, fraction), 3
        )
        trained = learners.sup_con_encoder(x, labels, fraction, 3, seed=0, steps=300)
        results[fraction] = [
            _label_task_accuracies(W, model, source, transfer) for W in (linear, trained)
        ]
    for learner in range(2):
        (in_domain_0, transfer_0), (in_domain_1, transfer_1) = (
            results[0.0][learner],
            results[1.0][learner],
        )
        assert in_domain_1 > in_domain_0 + 0.2
        assert transfer_1 < transfer_0 - 0.2


# --- downstream probes --------------------------------------------------------------


def test_probes_score_perfect_and_useless_features():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((400, 3))
    y = z @ np.array([1.0, -2.0, 0.5])
    assert linear_regression_probe(z[:200], y[:200], z[200:], y[200:]) == pytest.approx(1.0)
    noise = rng.standard_normal((400, 3))
    assert linear_regression_probe(noise[:200], y[:200], noise[200:], y[200:]) < 0.1
    labels = (z[:, 0] > 0).astype(int) + 2 * (z[:, 1] > 0)
    assert linear_classification_probe(z[:200], labels[:200], z[200:], labels[200:]) > 0.9
    assert knn_classification_probe(z[:200], labels[:200], z[200:], labels[200:], k=5) > 0.8


# --- Experiment 2: alpha-CL (Tian) --------------------------------------------------


@pytest.mark.parametrize(
    ("alpha_type", "temperature", "power"),
    [("exp", 0.5, 1.0), ("exp", 0.3, 2.0), ("inverse", 0.5, 2.0), ("constant", 0.5, 1.0)],
)
def test_alpha_weights_sum_to_one_and_rebuild_alpha_cl(alpha_type, temperature, power):
    z1, z2 = np.asarray(jax.random.normal(jax.random.key(0), (2, 10, 6)))
    kwargs = {"alpha_type": alpha_type, "temperature": temperature}
    exponents = alpha_cl.loss_exponents(alpha_type, power)
    alpha, value = jax.jit(
        lambda a, b: (
            alpha_cl.pairwise_importance(a, b, **kwargs, power=power),
            losses.alpha_cl(a, b, **kwargs, **exponents),
        )
    )(z1, z2)
    alpha = np.asarray(alpha)
    np.testing.assert_allclose(alpha.sum(axis=1), 1.0, rtol=1e-5)
    index = np.arange(20)
    positive = (index + 10) % 20
    assert np.abs(alpha[index, index]).max() == 0.0
    assert np.abs(alpha[index, positive]).max() == 0.0
    z = np.concatenate([z1, z2])
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    similarity = z @ z.T
    rebuilt = np.mean(np.sum(alpha * similarity, axis=1) - similarity[index, positive])
    assert rebuilt == pytest.approx(float(value), abs=1e-5)


def test_exp_alpha_with_power_one_is_the_infonce_softmax():
    z1, z2 = np.asarray(jax.random.normal(jax.random.key(1), (2, 8, 4)))
    alpha = jax.jit(
        lambda a, b: alpha_cl.pairwise_importance(
            a, b, alpha_type="exp", temperature=0.2, power=1.0
        )
    )(z1, z2)
    z = np.concatenate([z1, z2])
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    logits = z @ z.T / 0.2
    index = np.arange(16)
    negative = (index[:, None] != index) & ((index[:, None] + 8) % 16 != index)
    logits = np.where(negative, logits, -np.inf)
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(alpha, softmax, atol=1e-6)


def test_relu_units_specialise_to_generative_features_and_linear_units_do_not():
    kwargs = {"steps": 400, "num_snapshots": 4, "loss_names": ("InfoNCE (nt_xent)",)}
    relu = alpha_cl.relu_network_run(relu=True, **kwargs)["losses"]["InfoNCE (nt_xent)"]
    linear = alpha_cl.relu_network_run(relu=False, **kwargs)["losses"]["InfoNCE (nt_xent)"]
    assert relu["features_found"][-1] >= 4
    assert linear["features_found"][-1] == 0
    assert relu["specialisation"][-1] > linear["specialisation"][-1] + 0.05
    assert relu["specialisation"][-1] > relu["specialisation"][0]


def test_feature_overlap_of_the_features_themselves_is_identity():
    _, G = alpha_cl.sparse_feature_data(0, 10, dim=12, num_features=4)
    np.testing.assert_allclose(alpha_cl.feature_overlap(3.0 * G, G), np.eye(4), atol=1e-6)


def _fake_network_run(seed, num_examples=6, dim=5, num_features=4, hidden=8):
    """The fields of a `relu_network_run` result that the plots read, made up."""
    rng = np.random.default_rng(seed)
    return {
        "steps": [10, 20, 30],
        "G": rng.normal(size=(num_features, dim)),
        "losses": {
            "InfoNCE (nt_xent)": {
                "specialisation": [0.3, 0.6, 0.8],
                "features_found": [0, 2, 3],
                "overlap": rng.uniform(size=(hidden, num_features)),
                "embeddings": tuple(
                    jnp.asarray(rng.normal(size=(num_examples, 3)), jnp.float32) for _ in "12"
                ),
                "codes": rng.uniform(size=(num_examples, num_features)),
            },
            "alpha-CL exp": {
                "specialisation": [0.2, 0.5, 0.7],
                "features_found": [0, 1, 3],
            },
        },
    }


def test_alpha_cl_plots_write_their_figures(tmp_path, backend_untouched):
    linear = {
        "steps": [10, 20, 30],
        "noise_ratio": 4.0,
        "losses": {
            name: {"sin_theta": [0.9, 0.5 + i / 10, 0.2 + i / 10], "r2": 0.8}
            for i, name in enumerate(alpha_cl.LOSSES)
        },
        "references": {
            "PCA": {"sin_theta": 0.4, "r2": 0.7},
            "closed form": {"sin_theta": 0.1, "r2": 0.9},
        },
    }
    path = tmp_path / "alpha.png"
    alpha_cl.plot_alpha_cl(linear, _fake_network_run(0), path)
    image = _png_rgb(path, (15, 4.2), dpi=80)
    for colour in ("tab:blue", "tab:green", "tab:red"):  # one sin-theta curve per loss
        assert _has_colour(image, colour), colour

    path = tmp_path / "features.png"
    alpha_cl.plot_features(_fake_network_run(1), _fake_network_run(2), path)
    image = _png_rgb(path, (15, 4.2), dpi=80)
    assert _has_colour(image, "black") and _has_colour(image, "tab:blue")


def test_spiked_covariance_plots_write_their_figures(tmp_path, backend_untouched):
    methods = ["contrastive (linear loss)", "contrastive (NT-Xent)", "autoencoder", "PCA"]
    noise_records = [
        {
            "method": m,
            "noise_ratio": ratio,
            "dim": 20,
            "seed": seed,
            "sin_theta": 0.1 * i + 0.01 * seed,
            "r2": 0.9 - 0.1 * i,
        }
        for i, m in enumerate(methods)
        for ratio in (1.0, 10.0, 100.0)
        for seed in (0, 1)
    ]
    dimension_records = [
        {"method": m, "noise_ratio": 10.0, "dim": dim, "seed": 0, "sin_theta": 0.1 * i + dim / 1000}
        for i, m in enumerate(methods)
        for dim in (10, 20, 40)
    ]
    path = tmp_path / "spiked.png"
    spiked_covariance.plot_spiked_covariance(noise_records, dimension_records, path)
    image = _png_rgb(path, (13, 3.8), dpi=90)
    for colour in ("tab:blue", "tab:cyan", "tab:red", "tab:orange"):  # one line per method
        assert _has_colour(image, colour), colour

    fraction_records = [
        {
            "method": m,
            "fraction": f,
            "seed": seed,
            "in_domain": 0.5 + f / 2,
            "transfer": 0.6 - f / 4,
        }
        for m in ("SupCon (trained)", "linear loss (closed form)")
        for f in (0.0, 0.5, 1.0)
        for seed in (0, 1)
    ]
    path = tmp_path / "fraction.png"
    spiked_covariance.plot_label_fraction(fraction_records, path)
    image = _png_rgb(path, (8.5, 3.8), dpi=90)
    assert _has_colour(image, "tab:green") and _has_colour(image, "tab:purple")
    assert not _has_colour(image, "tab:blue")  # no other method's colour


# --- Experiment 3: alignment and uniformity (Wang & Isola) ---------------------------


def _png_rgb(path, size_inches, dpi):
    """The RGB pixels of a written PNG, checked to be ``size_inches`` at ``dpi``."""
    image = matplotlib.image.imread(path)[..., :3]
    width, height = size_inches
    assert image.shape == (round(height * dpi), round(width * dpi), 3)
    assert image.std() > 0.05  # something was drawn on the white canvas
    return image


def _has_colour(image, colour):
    """Whether some pixel has exactly ``colour`` (a marker's or a line's core)."""
    return bool(np.any(np.all(np.abs(image - np.array(to_rgb(colour))) < 1.5 / 255, axis=-1)))


@pytest.fixture
def backend_untouched(monkeypatch):
    """Fails a test whose plotting switches matplotlib's global backend."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"matplotlib.use{args} called: plots must not switch the backend")

    monkeypatch.setattr(matplotlib, "use", refuse)


def test_theory_plots_draw_on_figures_without_pyplot():
    # pyplot and matplotlib.use change process-wide state (the backend, the list of
    # open figures) behind a notebook's back; Figure objects are self-contained.
    for module in (align_uniform, alpha_cl, spiked_covariance):
        source = inspect.getsource(module)
        assert "pyplot" not in source and "matplotlib.use" not in source, module.__name__
        plots = [
            node
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.FunctionDef) and node.name.startswith("plot_")
        ]
        assert plots, module.__name__
        for function in plots:
            imports = [n for n in ast.walk(function) if isinstance(n, ast.Import | ast.ImportFrom)]
            assert not imports, f"{module.__name__}.{function.name} imports inside"


def test_plot_alignment_uniformity_accepts_dicts_and_records(tmp_path, backend_untouched):
    path = tmp_path / "plane.png"
    align_uniform.plot_alignment_uniformity({"a": (0.4, -3.0), "b": (0.2, -2.0, 0.8)}, path)
    _png_rgb(path, (8, 5.5), dpi=90)
    records = [
        {"name": "simclr", "alignment": 0.3, "uniformity": -3.2, "accuracy": 0.9, "group": "x"},
        {"name": "random", "alignment": 1.0, "uniformity": -1.0, "accuracy": None},
    ]
    align_uniform.plot_alignment_uniformity(records, tmp_path / "records.png", title="t")
    image = _png_rgb(tmp_path / "records.png", (8, 5.5), dpi=90)
    # The one accuracy is the middle of its colour range: viridis(0.5) fills its marker.
    assert _has_colour(image, matplotlib.colormaps["viridis"](0.5))
    with pytest.raises(ValueError, match="alignment"):
        align_uniform.plot_alignment_uniformity([{"name": "x", "uniformity": 0.0}], path)
    with pytest.raises(ValueError, match="values"):
        align_uniform.plot_alignment_uniformity({"x": (1.0,)}, path)


def test_alignment_and_uniformity_track_accuracy_on_synthetic_clusters():
    # Both trained encoders share one compiled objective (the weight is traced).
    records = {
        r["name"]: r
        for r in align_uniform.run_experiment(
            temperatures=(),
            uniformity_weights=(0.0, 1.0),
            num_samples=2048,
            steps=300,
            progress=False,
        )
    }
    untrained, balanced, collapsed = records["untrained"], records["w=1"], records["w=0"]
    # Alignment alone collapses: perfectly aligned, not uniform at all, poor accuracy.
    assert collapsed["alignment"] < 0.01 and collapsed["uniformity"] > -0.05
    # align + uniform beats the untrained encoder on both metrics, and is more
    # accurate than both the untrained and the collapsed encoders.
    assert balanced["alignment"] < untrained["alignment"] - 0.3
    assert balanced["uniformity"] < untrained["uniformity"] - 0.3
    assert balanced["accuracy"] > max(untrained["accuracy"], collapsed["accuracy"]) + 0.2
