"""Experiment 2: alpha-CL, contrastive learning as coordinate-wise optimisation (Tian 2022).

Run::

    python -m jaxcl.theory.alpha_cl --out=docs/figures

Tian writes contrastive losses as a game: a min player chooses the pairwise
importance alpha (how much each negative pair counts, computed with
stop-gradient from the current distances) and a max player, the encoder,
climbs the alpha-weighted contrast. InfoNCE is one choice of alpha
(``'exp'`` with power 1), the quadratic loss another (constant alpha).

Two toys, each trained with ``alpha_cl`` ``'exp'``, ``'inverse'``, constant
(``quadratic``) and with InfoNCE (``nt_xent``), all from `jaxcl.losses`:

1. the spiked covariance model of `jaxcl.theory.model` with a linear encoder
   and random masking: sin-theta to the core subspace over training;
2. a one-hidden-layer ReLU network on inputs built from a few sparse,
   non-negative generative features (`sparse_feature_data`), against the same
   network without the ReLU: the overlap of each hidden unit's weights with the
   generative features over training.

Writes ``theory_alpha_cl.png``, ``theory_alpha_cl_features.png`` and
``theory_alpha_cl.json`` to ``--out``; takes about a minute of CPU time.

Reference: Tian, "Understanding Deep Contrastive Learning via Coordinate-wise
Optimization", NeurIPS 2022, https://arxiv.org/abs/2201.12680
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from jaxcl import losses
from jaxcl.theory import learners
from jaxcl.theory.downstream import linear_regression_probe
from jaxcl.theory.model import make_spiked_covariance, masked_views
from jaxcl.theory.subspace import orthonormal_columns, subspace_distance
from jaxcl.theory.training import train

__all__ = [
    "LOSSES",
    "contrastive_loss",
    "feature_overlap",
    "feature_views",
    "linear_model_run",
    "main",
    "pairwise_cosine_distance",
    "pairwise_importance",
    "plot_alpha_cl",
    "plot_features",
    "relu_network_run",
    "sparse_feature_data",
]

# name -> (alpha_type or None for InfoNCE, temperature, power)
LOSSES: dict[str, tuple[str | None, float, float]] = {
    "InfoNCE (nt_xent)": (None, 0.5, 1.0),
    "alpha-CL exp": ("exp", 0.5, 2.0),
    "alpha-CL inverse": ("inverse", 0.5, 2.0),
    "quadratic (constant alpha)": ("constant", 0.5, 1.0),
}
_COLORS = {
    "InfoNCE (nt_xent)": "black",
    "alpha-CL exp": "tab:blue",
    "alpha-CL inverse": "tab:green",
    "quadratic (constant alpha)": "tab:red",
}


def contrastive_loss(name: str, z1: jax.Array, z2: jax.Array) -> jax.Array:
    """The loss called ``name`` in `LOSSES`, from `jaxcl.losses`, on two views.

    Args:
      name: a key of `LOSSES`.
      z1: (N, k) embeddings of the first views.
      z2: (N, k) embeddings of the second views.

    Returns:
      The scalar loss.
    """
    alpha_type, temperature, power = LOSSES[name]
    if alpha_type is None:
        return losses.nt_xent(z1, z2, temperature=temperature)
    return losses.alpha_cl(
        z1, z2, alpha_type=alpha_type, temperature=temperature, **loss_exponents(alpha_type, power)
    )


def loss_exponents(alpha_type: str, power: float) -> dict[str, float]:
    """``jaxcl.losses.alpha_cl``'s keyword for this module's exponent ``power``.

    The distance exponent of ``'exp'`` (``alpha_exponent``) or the outer exponent
    of ``'inverse'`` (``inverse_exponent``); the constant alpha has none.
    """
    if alpha_type == "exp":
        return {"alpha_exponent": power}
    if alpha_type == "inverse":
        return {"inverse_exponent": power}
    return {}


def pairwise_cosine_distance(z1, z2) -> jax.Array:
    """Cosine distances ``r = 1 - s`` between all 2N views ``[z1; z2]``.

    Args:
      z1: (N, k) embeddings of the first views.
      z2: (N, k) embeddings of the second views.

    Returns:
      The (2N, 2N) matrix of ``1 - cos``, in [0, 2].
    """
    z = losses.l2_normalize(jnp.concatenate([z1, z2], axis=0))
    return 1.0 - z @ z.T


def pairwise_importance(
    z1, z2, *, alpha_type: str, temperature: float = 0.5, power: float = 1.0
) -> jax.Array:
    """Tian's pairwise importance alpha for every anchor and negative.

    Follows the definition used by `jaxcl.losses.alpha_cl`: for anchor a among
    the 2N views ``[z1; z2]`` and a negative k (neither a nor its positive),
    with ``r = 1 - cos``,

    * ``'exp'``: ``alpha_ak ∝ exp(-r_ak**power / temperature)``;
    * ``'inverse'``: ``alpha_ak ∝ (r_ak + temperature)**-power``;
    * ``'constant'``: uniform over the negatives;

    normalised so that each row sums to one. Entries of the anchor itself and of
    its positive are 0.

    Args:
      z1: (N, k) embeddings of the first views.
      z2: (N, k) embeddings of the second views.
      alpha_type: ``'exp'``, ``'inverse'`` or ``'constant'``.
      temperature: tau.
      power: p.

    Returns:
      The (2N, 2N) matrix alpha; ``alpha_cl`` equals
      ``mean_a(sum_k alpha_ak s_ak - s_a,pos(a))``.

    References:
      Tian, NeurIPS 2022, https://arxiv.org/abs/2201.12680
    """
    distance = jnp.maximum(pairwise_cosine_distance(z1, z2), 0.0)
    num_views = distance.shape[0]
    index = jnp.arange(num_views)
    positive = (index + num_views // 2) % num_views
    is_negative = (index[:, None] != index[None, :]) & (positive[:, None] != index[None, :])
    if alpha_type == "exp":
        log_weight = -(distance**power) / temperature
    elif alpha_type == "inverse":
        log_weight = -power * jnp.log(distance + temperature)
    elif alpha_type == "constant":
        log_weight = jnp.zeros_like(distance)
    else:
        raise ValueError(f"alpha_type={alpha_type!r} is unknown; use exp, inverse or constant.")
    return jax.nn.softmax(jnp.where(is_negative, log_weight, -jnp.inf), axis=1)


# --- Toy 1: linear encoder on the spiked covariance model -------------------


def _linear_loss(params, batch, key, hyper, name):
    x1, x2 = masked_views(key, batch["x"], 0.5)
    W = params["encoder"]
    return contrastive_loss(name, x1 @ W.T, x2 @ W.T)


def _bind_loss(loss_fn, name):
    # One function object per loss name, made once at import: `training.train`
    # caches its compiled program on the function's identity.
    def bound(params, batch, key, hyper):
        return loss_fn(params, batch, key, hyper, name)

    return bound


_LINEAR_LOSS_FNS = {name: _bind_loss(_linear_loss, name) for name in LOSSES}


def linear_model_run(
    *,
    dim: int = 50,
    rank: int = 3,
    noise_ratio: float = 10.0,
    num_samples: int = 2000,
    steps: int = 600,
    num_snapshots: int = 20,
    seed: int = 0,
    loss_names: Sequence[str] = tuple(LOSSES),
) -> dict:
    """Trains a linear encoder with each loss of `LOSSES` on the spiked covariance model.

    Args:
      dim: d.
      rank: r, also the representation dimension.
      noise_ratio: noise heteroskedasticity (see `jaxcl.theory.model.noise_variances`).
      num_samples: n.
      steps: Adam steps per loss.
      num_snapshots: evaluation points along training.
      seed: seed of the model, data and initialisation.
      loss_names: which losses of `LOSSES` to train.

    Returns:
      ``{"steps": [...], "losses": {name: {"sin_theta": [...], "r2": float,
      "encoder": W}}, "references": {name: {"sin_theta", "r2"}}}``: sin-theta
      to U* at each snapshot, the final downstream R^2 of regressing z on the
      representation, and both metrics for PCA and for the closed-form
      minimiser of the unnormalised linear loss of Ji et al.
    """
    model = make_spiked_covariance(dim, rank, seed=seed, noise_ratio=noise_ratio)
    x, _ = model.sample(seed + 1000, num_samples)
    x_probe, z_probe = model.sample(seed + 2000, 500)
    x_test, z_test = model.sample(seed + 3000, 2000)
    init = 0.1 * jax.random.normal(jax.random.key(seed), (rank, dim)) / np.sqrt(dim)
    results = {}
    for name in loss_names:
        loss_fn = _LINEAR_LOSS_FNS[name]
        run = train(
            loss_fn,
            {"encoder": init},
            {"x": jnp.asarray(x)},
            key=jax.random.key(seed + 1),
            steps=steps,
            learning_rate=0.02,
            batch_size=256,
            num_snapshots=num_snapshots,
        )
        snapshots = np.asarray(run.snapshots["encoder"])
        W = snapshots[-1]
        results[name] = {
            "sin_theta": [subspace_distance(model.core_basis, s) for s in snapshots],
            "r2": linear_regression_probe(x_probe @ W.T, z_probe, x_test @ W.T, z_test),
            "encoder": W,
            "embeddings": (x[:64] @ W.T),
        }
    references = {}
    for name, W in (
        ("PCA", learners.pca_encoder(x, rank)),
        (
            "linear loss (Ji et al., closed form)",
            learners.linear_contrastive_closed_form(
                learners.expected_masked_cross_covariance(x), rank
            ),
        ),
    ):
        references[name] = {
            "sin_theta": subspace_distance(model.core_basis, W),
            "r2": linear_regression_probe(x_probe @ W.T, z_probe, x_test @ W.T, z_test),
        }
    step_marks = [(i + 1) * steps // num_snapshots for i in range(num_snapshots)]
    return {
        "steps": step_marks,
        "noise_ratio": noise_ratio,
        "losses": results,
        "references": references,
    }


# --- Toy 2: one-hidden-layer ReLU network on sparse generative features -----


def sparse_feature_data(
    seed: int,
    num_samples: int,
    *,
    dim: int = 24,
    num_features: int = 6,
    active_prob: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """Latent codes of a sparse generative model and its features.

    An example is ``x = sum_k c_k g_k + noise`` with orthonormal generative
    features g_k (rows of G) and sparse non-negative codes: feature k is
    present with probability ``active_prob`` with amplitude U(0.5, 1.5). The
    views are drawn by `feature_views` from the code, so the model is known
    exactly and the codes can be returned instead of x.

    Args:
      seed: seed of G and of the codes.
      num_samples: n.
      dim: d.
      num_features: K.
      active_prob: probability that a feature is present.

    Returns:
      ``(codes, G)``: (n, K) float32 codes and (K, d) float32 features.
    """
    rng = np.random.default_rng(seed)
    G = orthonormal_columns(rng.standard_normal((dim, num_features))).T
    present = rng.random((num_samples, num_features)) < active_prob
    codes = present * rng.uniform(0.5, 1.5, (num_samples, num_features))
    return codes.astype(np.float32), G.astype(np.float32)


def feature_views(key, codes, G, *, jitter: float = 0.4, noise_std: float = 0.1):
    """Two views of each code: amplitudes jittered, independent input noise.

    ``view = (c * u) G + noise`` with ``u ~ U(1 - jitter, 1 + jitter)`` per
    feature and ``noise ~ N(0, noise_std^2 I)``: the views agree on which
    features are present and disagree on their strength.

    Args:
      key: PRNG key.
      codes: (n, K) codes from `sparse_feature_data`.
      G: (K, d) features.
      jitter: relative amplitude jitter.
      noise_std: input noise.

    Returns:
      Two (n, d) arrays.
    """
    views = []
    for view_key in jax.random.split(key, 2):
        scale_key, noise_key = jax.random.split(view_key)
        scale = jax.random.uniform(scale_key, codes.shape, minval=1 - jitter, maxval=1 + jitter)
        noise = noise_std * jax.random.normal(noise_key, (codes.shape[0], G.shape[1]))
        views.append((codes * scale) @ G + noise)
    return views[0], views[1]


def _network(params, x, use_relu):
    pre_activation = x @ params["hidden"].T + params["bias"]
    # A traced switch rather than two functions: the ReLU and the linear
    # network then share one compiled program per loss.
    hidden = jnp.where(use_relu > 0, jax.nn.relu(pre_activation), pre_activation)
    return hidden @ params["output"].T


def _network_loss(params, batch, key, hyper, name):
    x1, x2 = feature_views(key, batch["codes"], hyper["G"])
    return contrastive_loss(
        name, _network(params, x1, hyper["relu"]), _network(params, x2, hyper["relu"])
    )


_NETWORK_LOSS_FNS = {name: _bind_loss(_network_loss, name) for name in LOSSES}


@jax.jit
def _embed_views(params, codes, G, use_relu, seed):
    # Jitted so the evaluation compiles once instead of op by op.
    x1, x2 = feature_views(jax.random.key(seed + 7), codes, G)
    return _network(params, x1, use_relu), _network(params, x2, use_relu)


def feature_overlap(hidden_weights, G) -> np.ndarray:
    """``|cos(w_j, g_k)|`` between every hidden unit j and generative feature k.

    Args:
      hidden_weights: (m, d) first-layer weights, one row per hidden unit.
      G: (K, d) generative features (unit rows).

    Returns:
      An (m, K) array in [0, 1]; a unit that has picked feature k has a row
      with one entry near 1 and the others near 0.
    """
    w = np.asarray(hidden_weights, np.float64)
    w = w / (np.linalg.norm(w, axis=1, keepdims=True) + 1e-12)
    g = np.asarray(G, np.float64)
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    return np.abs(w @ g.T)


def _overlap_summary(overlap, threshold=0.9):
    best_per_unit = overlap.max(axis=1)
    return {
        "specialisation": float(best_per_unit.mean()),
        "features_found": int(np.sum(overlap.max(axis=0) > threshold)),
    }


def relu_network_run(
    *,
    num_features: int = 6,
    dim: int = 24,
    hidden: int = 12,
    output: int = 8,
    num_samples: int = 4096,
    steps: int = 800,
    num_snapshots: int = 16,
    seed: int = 0,
    relu: bool = True,
    loss_names: Sequence[str] = tuple(LOSSES),
    batch_size: int = 256,
) -> dict:
    """Trains the one-hidden-layer network with each loss of `LOSSES`.

    Args:
      num_features: K, generative features.
      dim: input dimension d.
      hidden: hidden units m.
      output: embedding dimension.
      num_samples: n.
      steps: Adam steps per loss.
      num_snapshots: evaluation points along training.
      seed: seed of the data and the initialisation.
      relu: False trains the same network without its non-linearity.
      loss_names: which losses of `LOSSES` to train.
      batch_size: examples per step (each anchor has 2 * batch_size - 2 negatives).

    Returns:
      ``{"steps": [...], "G": G, "losses": {name: {"specialisation": [...],
      "features_found": [...], "overlap": final (m, K) overlap, "embeddings":
      (z1, z2), "codes": codes}}}`` where specialisation is the mean over units
      of the best overlap and features_found counts features that some unit
      matches with overlap > 0.9.
    """
    codes, G = sparse_feature_data(seed, num_samples, dim=dim, num_features=num_features)
    keys = jax.random.split(jax.random.key(seed), 3)
    init = {
        "hidden": jax.random.normal(keys[0], (hidden, dim)) / np.sqrt(dim),
        "bias": jnp.zeros((hidden,)),
        "output": jax.random.normal(keys[1], (output, hidden)) / np.sqrt(hidden),
    }
    hyper = {"G": G, "relu": float(relu)}
    results = {}
    for name in loss_names:
        loss_fn = _NETWORK_LOSS_FNS[name]
        run = train(
            loss_fn,
            init,
            {"codes": jnp.asarray(codes)},
            key=keys[2],
            steps=steps,
            learning_rate=0.01,
            batch_size=batch_size,
            hyper=hyper,
            num_snapshots=num_snapshots,
        )
        overlaps = [feature_overlap(w, G) for w in np.asarray(run.snapshots["hidden"])]
        summaries = [_overlap_summary(o) for o in overlaps]
        eval_codes = codes[:48]
        z1, z2 = _embed_views(run.params, jnp.asarray(eval_codes), G, float(relu), seed)
        results[name] = {
            "specialisation": [s["specialisation"] for s in summaries],
            "features_found": [s["features_found"] for s in summaries],
            "overlap": overlaps[-1],
            "embeddings": (np.asarray(z1), np.asarray(z2)),
            "codes": eval_codes,
        }
    step_marks = [(i + 1) * steps // num_snapshots for i in range(num_snapshots)]
    return {"steps": step_marks, "G": G, "losses": results}


# --- Figures and command line -------------------------------------------------


def _importance_panels(ax_scatter, ax_heatmap, network):
    """Alpha against distance for every alpha type, and one alpha matrix."""
    z1, z2 = network["losses"]["InfoNCE (nt_xent)"]["embeddings"]
    distance = np.asarray(pairwise_cosine_distance(z1, z2))
    num_views = distance.shape[0]
    index = np.arange(num_views)
    is_negative = (index[:, None] != index[None, :]) & (
        (index[None, :] + num_views // 2) % num_views != index[:, None]
    )
    for name, (alpha_type, temperature, power) in LOSSES.items():
        if alpha_type is None:
            continue
        alpha = np.asarray(
            pairwise_importance(z1, z2, alpha_type=alpha_type, temperature=temperature, power=power)
        )
        # alpha times the number of negatives: 1 is the uniform (quadratic) weight.
        relative = alpha * (num_views - 2)
        ax_scatter.scatter(
            distance[is_negative],
            relative[is_negative],
            s=2,
            alpha=0.3,
            color=_COLORS[name],
            label=rf"{alpha_type} ($\tau$={temperature}, p={power})",
        )
    ax_scatter.set(
        yscale="log",
        xlabel="cosine distance r = 1 - cos of a negative pair",
        ylabel=r"$\alpha$ $\times$ number of negatives",
        title=r"pairwise importance $\alpha$ vs distance",
    )
    ax_scatter.legend(fontsize=7, markerscale=4)
    # Sort examples by their strongest feature so similar inputs sit together.
    codes = network["losses"]["InfoNCE (nt_xent)"]["codes"]
    order = np.lexsort((-codes.max(axis=1), codes.argmax(axis=1)))
    alpha_type, temperature, power = LOSSES["alpha-CL exp"]
    alpha = np.asarray(
        pairwise_importance(z1, z2, alpha_type=alpha_type, temperature=temperature, power=power)
    )
    half = len(codes)
    block = alpha[:half, half:][np.ix_(order, order)] * (num_views - 2)
    image = ax_heatmap.imshow(block, cmap="viridis")
    ax_heatmap.set(
        xlabel="negative (2nd view), sorted by main feature",
        ylabel="anchor (1st view), sorted",
        title=r"$\alpha$ (exp) $\times$ negatives: hard negatives share features",
    )
    ax_heatmap.figure.colorbar(image, ax=ax_heatmap, fraction=0.046)


def plot_alpha_cl(linear, network, path) -> None:
    """Writes the alpha panels and the linear-model sin-theta curves to ``path``.

    Args:
      linear: output of `linear_model_run`.
      network: output of `relu_network_run` (its InfoNCE embeddings give alpha).
      path: PNG file to write.
    """
    fig = Figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    _importance_panels(axes[0], axes[1], network)
    for name, result in linear["losses"].items():
        axes[2].plot(
            linear["steps"],
            result["sin_theta"],
            color=_COLORS[name],
            label=f"{name}: R² {result['r2']:.3f}",
        )
    for (name, reference), linestyle in zip(linear["references"].items(), (":", "-."), strict=True):
        axes[2].axhline(
            reference["sin_theta"],
            color="gray",
            linestyle=linestyle,
            label=f"{name}: R² {reference['r2']:.3f}",
        )
    axes[2].set(
        xlabel="training step",
        ylabel="sin-theta distance to U*",
        title=f"linear encoder, spiked covariance (noise ratio {linear['noise_ratio']:g})",
    )
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def plot_features(relu_network, linear_network, path) -> None:
    """Writes feature emergence over training (ReLU vs linear network) to ``path``.

    Args:
      relu_network: output of `relu_network_run` with ``relu=True``.
      linear_network: output of `relu_network_run` with ``relu=False``.
      path: PNG file to write.
    """
    fig = Figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    networks = ((relu_network, "-", "ReLU"), (linear_network, "--", "linear"))
    for network, linestyle, label in networks:
        for name, result in network["losses"].items():
            for ax, key in zip(axes[:2], ("specialisation", "features_found"), strict=True):
                ax.plot(
                    network["steps"],
                    result[key],
                    color=_COLORS[name],
                    linestyle=linestyle,
                    label=f"{label}, {name}",
                )
    num_features = relu_network["G"].shape[0]
    axes[0].set(
        xlabel="training step",
        ylabel="mean over units of max_k |cos(w_j, g_k)|",
        title="hidden units align with generative features",
    )
    axes[1].set(
        xlabel="training step",
        ylabel=f"features matched by a unit (|cos| > 0.9, of {num_features})",
        title="features that emerge",
        ylim=(-0.3, num_features + 0.3),
    )
    axes[1].legend(fontsize=7, loc="center right")
    for ax in axes[:2]:
        ax.grid(alpha=0.3)
    overlap = relu_network["losses"]["InfoNCE (nt_xent)"]["overlap"]
    order = np.lexsort((-overlap.max(axis=1), overlap.argmax(axis=1)))
    image = axes[2].imshow(overlap[order], cmap="magma", vmin=0, vmax=1, aspect="auto")
    axes[2].set(
        xlabel="generative feature k",
        ylabel="hidden unit j (sorted)",
        title="|cos(w_j, g_k)|, ReLU net, InfoNCE, end of training",
    )
    fig.colorbar(image, ax=axes[2], fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def _jsonable(run):
    """The numbers of a run, without arrays that only feed the figures."""
    return {
        **{key: run[key] for key in ("steps", "noise_ratio", "references") if key in run},
        "losses": {
            name: {
                key: value
                for key, value in result.items()
                if key not in ("encoder", "embeddings", "codes", "overlap")
            }
            for name, result in run["losses"].items()
        },
    }


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: trains both toys with every loss and writes the figures and JSON.

    Args:
      argv: command-line arguments (``--out``, ``--seed``); ``None`` reads sys.argv.

    Returns:
      The three runs (linear model, ReLU network, linear network).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/figures", help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    runs = {}
    jobs = {
        "linear_model": lambda: linear_model_run(seed=args.seed),
        "relu_network": lambda: relu_network_run(seed=args.seed, relu=True),
        "linear_network": lambda: relu_network_run(seed=args.seed, relu=False),
    }
    for name, job in tqdm(jobs.items(), desc="alpha-CL toys"):
        runs[name] = job()
    plot_alpha_cl(
        runs["linear_model"], runs["relu_network"], os.path.join(args.out, "theory_alpha_cl.png")
    )
    plot_features(
        runs["relu_network"],
        runs["linear_network"],
        os.path.join(args.out, "theory_alpha_cl_features.png"),
    )
    summary = {name: _jsonable(run) for name, run in runs.items()}
    with open(os.path.join(args.out, "theory_alpha_cl.json"), "w") as f:
        json.dump(summary, f, indent=1)
    for name, run in summary.items():
        print(f"\n{name}")
        for loss, result in {**run["losses"], **run.get("references", {})}.items():
            cells = ", ".join(
                f"{key} {value[-1] if isinstance(value, list) else value:.3f}"
                for key, value in result.items()
            )
            print(f"  {loss:28s} {cells}")
    return runs


if __name__ == "__main__":
    main()
