"""Experiment 1: contrastive learning vs PCA and autoencoders (Ji et al. 2021).

Run::

    python -m jaxcl.theory.spiked_covariance --out=docs/figures

Three sweeps on the spiked covariance model (`jaxcl.theory.model`):

1. noise heteroskedasticity (largest / smallest noise variance from 1 to 100)
   at d = 50: sin-theta distance to the core subspace, and the R^2 of a
   downstream regression of the core features z on the representation;
2. dimension d at strongly heteroskedastic noise, with n = 40 d samples;
3. the fraction of labelled examples in supervised contrastive learning,
   with in-domain accuracy (the task the labels came from) and transfer
   accuracy (another task on other directions of the same core subspace).

Methods: the linear contrastive loss of Ji et al. with random masking
(gradient-trained), NT-Xent (`jaxcl.losses.nt_xent`) on the same linear
encoder and masks, PCA and a linear autoencoder. Writes
``theory_spiked_covariance.png``, ``theory_label_fraction.png`` and
``theory_spiked_covariance.json`` (every number plotted) to ``--out``; takes about a
minute and a half of CPU time.

Reference: Ji, Deng, Nakada, Zou, Zhang, "The Power of Contrast for Feature
Learning: A Theoretical Analysis", 2021, https://arxiv.org/abs/2110.02473
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter
from tqdm.auto import tqdm

from jaxcl.theory import learners
from jaxcl.theory.downstream import linear_classification_probe, linear_regression_probe
from jaxcl.theory.model import make_spiked_covariance
from jaxcl.theory.subspace import orthonormal_columns, subspace_distance

__all__ = [
    "METHODS",
    "dimension_sweep",
    "label_fraction_sweep",
    "main",
    "noise_sweep",
    "sign_pattern_labels",
]

# Shared by every method so that differences come from the objective only.
TRAIN_STEPS = 400
BATCH_SIZE = 256


def _linear_contrastive(x, rank, seed):
    # Full batch: the small eigen-gaps of the masked cross-covariance make
    # mini-batch noise visible in the learned subspace at this step budget.
    return learners.linear_contrastive_encoder(x, rank, seed=seed, steps=TRAIN_STEPS)


def _nt_xent(x, rank, seed):
    return learners.nt_xent_encoder(
        x, rank, seed=seed, steps=TRAIN_STEPS, batch_size=BATCH_SIZE, temperature=0.5
    )


def _autoencoder(x, rank, seed):
    return learners.autoencoder_encoder(
        x, rank, seed=seed, steps=TRAIN_STEPS, batch_size=2 * BATCH_SIZE
    )


def _pca(x, rank, seed):
    del seed
    return learners.pca_encoder(x, rank)


METHODS: dict[str, Callable] = {
    "contrastive (linear loss)": _linear_contrastive,
    "contrastive (NT-Xent)": _nt_xent,
    "autoencoder": _autoencoder,
    "PCA": _pca,
}


def _evaluate(model, W, seed, num_probe=500, num_test=2000):
    """Sin-theta to the core, to the best subspace for regression, and R^2."""
    x_probe, z_probe = model.sample(seed + 2000, num_probe)
    x_test, z_test = model.sample(seed + 3000, num_test)
    r2 = linear_regression_probe(x_probe @ W.T, z_probe, x_test @ W.T, z_test)
    # E[z | x] is linear in x with rows spanning Sigma^{-1} U*: the r-dimensional
    # representation that predicts z best, which is not U* itself when the
    # noise is heteroskedastic.
    regression_subspace = orthonormal_columns(np.linalg.solve(model.covariance(), model.core_basis))
    return {
        "sin_theta": subspace_distance(model.core_basis, W),
        "sin_theta_to_regression_subspace": subspace_distance(regression_subspace, W),
        "r2": r2,
    }


def _run_grid(configs, methods, progress):
    records = []
    for config in tqdm(configs, desc="spiked covariance", disable=not progress, leave=False):
        model = make_spiked_covariance(
            config["dim"], config["rank"], seed=config["seed"], noise_ratio=config["noise_ratio"]
        )
        x, _ = model.sample(config["seed"] + 1000, config["num_samples"])
        for name in methods:
            W = METHODS[name](x, config["rank"], config["seed"])
            records.append({**config, "method": name, **_evaluate(model, W, config["seed"])})
    return records


def noise_sweep(
    noise_ratios: Sequence[float] = (1, 3, 10, 30, 100),
    *,
    dim: int = 50,
    rank: int = 3,
    num_samples: int = 2000,
    seeds: Sequence[int] = (0, 1, 2),
    methods: Sequence[str] = tuple(METHODS),
    progress: bool = True,
) -> list[dict]:
    """Sin-theta and downstream R^2 of each method as the noise gets heteroskedastic.

    Args:
      noise_ratios: largest over smallest noise variance (mean variance 1);
        signal variance is 4 per core feature.
      dim: d.
      rank: r, also the representation dimension.
      num_samples: n, unlabelled training examples.
      seeds: one model, data set and initialisation per seed.
      methods: names from `METHODS`.
      progress: show a tqdm bar.

    Returns:
      One record per (noise ratio, seed, method) with ``sin_theta`` (to U*),
      ``sin_theta_to_regression_subspace`` (to span(Sigma^-1 U*), the rows of
      the best linear predictor E[z | x]) and ``r2``.
    """
    configs = [
        {"dim": dim, "rank": rank, "num_samples": num_samples, "noise_ratio": ratio, "seed": seed}
        for ratio in noise_ratios
        for seed in seeds
    ]
    return _run_grid(configs, methods, progress)


def dimension_sweep(
    dims: Sequence[int] = (20, 40, 80, 160),
    *,
    noise_ratio: float = 100.0,
    rank: int = 3,
    samples_per_dim: int = 40,
    seeds: Sequence[int] = (0, 1, 2),
    methods: Sequence[str] = ("contrastive (linear loss)", "contrastive (NT-Xent)", "PCA"),
    progress: bool = True,
) -> list[dict]:
    """Sin-theta of each method as d grows with n / d fixed.

    Keeping n / d fixed keeps the estimation error sqrt(r d / n) of Ji et al.'s
    bound constant, so what changes with d is the bias: the r/d-order bias of
    deleting the diagonal (contrastive) against the heteroskedastic bias of
    PCA, which does not shrink.

    Args:
      dims: the values of d.
      noise_ratio: largest over smallest noise variance.
      rank: r.
      samples_per_dim: n / d.
      seeds: one model, data set and initialisation per seed.
      methods: names from `METHODS`; the autoencoder is left out by default
        because it coincides with PCA (see `noise_sweep`) and every d costs
        one compilation per trained method.
      progress: show a tqdm bar.

    Returns:
      One record per (d, seed, method) with ``sin_theta`` and ``r2``.
    """
    configs = [
        {
            "dim": dim,
            "rank": rank,
            "num_samples": samples_per_dim * dim,
            "noise_ratio": noise_ratio,
            "seed": seed,
        }
        for dim in dims
        for seed in seeds
    ]
    return _run_grid(configs, methods, progress)


def sign_pattern_labels(z, features: Sequence[int]) -> np.ndarray:
    """Class = the sign pattern of some core features (2^len(features) classes).

    Args:
      z: (n, r) core features.
      features: which columns of z decide the class.

    Returns:
      (n,) int32 labels in [0, 2^len(features)).
    """
    bits = (np.asarray(z)[:, list(features)] > 0).astype(np.int32)
    return bits @ (2 ** np.arange(len(features), dtype=np.int32))


def label_fraction_sweep(
    fractions: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
    *,
    dim: int = 40,
    signal_std: Sequence[float] = (3.0, 3.0, 3.0, 2.0, 2.0, 2.0),
    representation_dim: int = 3,
    source_features: Sequence[int] = (3, 4, 5),
    transfer_features: Sequence[int] = (0, 1, 2),
    num_samples: int = 2000,
    seeds: Sequence[int] = (0, 1),
    progress: bool = True,
) -> list[dict]:
    """In-domain vs transfer accuracy of supervised contrastive learning.

    The core subspace has more directions (6) than the representation (3), so
    the representation must choose. Self-supervised contrastive learning keeps
    the strongest core features (transfer features, s = 3); the labels of the
    source task depend on the weaker ones (s = 2). Labels therefore pull the
    representation toward the source task's features: better in-domain, worse
    transfer, which is the mechanism behind Ji et al.'s claim that labels help
    in-domain but can hurt transfer. Two learners: SupCon
    (`learners.sup_con_encoder`, trained) and the linear supervised loss
    (`learners.supervised_contrastive_matrix`, closed form).

    Args:
      fractions: labelled fractions of the training set.
      dim: d.
      signal_std: standard deviation of each core feature.
      representation_dim: k < r.
      source_features: core features whose sign pattern is the source label.
      transfer_features: core features whose sign pattern is the transfer label.
      num_samples: n.
      seeds: one model, data set and initialisation per seed.
      progress: show a tqdm bar.

    Returns:
      One record per (fraction, seed, learner) with ``in_domain`` and
      ``transfer`` accuracies (chance is 1/8).
    """
    records = []
    configs = [(fraction, seed) for fraction in fractions for seed in seeds]
    for fraction, seed in tqdm(configs, desc="label fraction", disable=not progress, leave=False):
        model = make_spiked_covariance(dim, len(signal_std), seed=seed, signal_std=signal_std)
        x, z = model.sample(seed + 1000, num_samples)
        x_probe, z_probe = model.sample(seed + 2000, 1000)
        x_test, z_test = model.sample(seed + 3000, 2000)
        encoders = {
            "SupCon (trained)": learners.sup_con_encoder(
                x,
                sign_pattern_labels(z, source_features),
                fraction,
                representation_dim,
                seed=seed,
                steps=TRAIN_STEPS,
                batch_size=BATCH_SIZE,
            ),
            "linear loss (closed form)": learners.linear_contrastive_closed_form(
                learners.supervised_contrastive_matrix(
                    x, sign_pattern_labels(z, source_features), fraction
                ),
                representation_dim,
            ),
        }
        for name, W in encoders.items():
            scores = {
                task: linear_classification_probe(
                    x_probe @ W.T,
                    sign_pattern_labels(z_probe, features),
                    x_test @ W.T,
                    sign_pattern_labels(z_test, features),
                )
                for task, features in (
                    ("in_domain", source_features),
                    ("transfer", transfer_features),
                )
            }
            records.append({"fraction": fraction, "seed": seed, "method": name, **scores})
    return records


def _mean_std(records, x_key, y_key, method):
    xs = sorted({r[x_key] for r in records if r["method"] == method})
    values = [[r[y_key] for r in records if r["method"] == method and r[x_key] == x] for x in xs]
    return (
        np.array(xs),
        np.array([np.mean(v) for v in values]),
        np.array([np.std(v) for v in values]),
    )


_STYLES = {
    "contrastive (linear loss)": {"color": "tab:blue", "marker": "o"},
    "contrastive (NT-Xent)": {"color": "tab:cyan", "marker": "s"},
    "autoencoder": {"color": "tab:red", "marker": "^", "markersize": 8},
    "PCA": {"color": "tab:orange", "marker": "x", "linestyle": "--"},
}


def _plot_lines(ax, records, x_key, y_key):
    for method, style in _STYLES.items():
        if not any(r["method"] == method for r in records):
            continue
        xs, mean, std = _mean_std(records, x_key, y_key, method)
        ax.errorbar(xs, mean, yerr=std, label=method, capsize=3, **{"markersize": 5, **style})


def plot_spiked_covariance(noise_records, dimension_records, path) -> None:
    """Writes the three-panel figure of Experiment 1 to ``path``.

    Args:
      noise_records: output of `noise_sweep` (sin-theta and R^2 panels).
      dimension_records: output of `dimension_sweep` (middle panel).
      path: PNG file to write.
    """
    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    _plot_lines(axes[0], noise_records, "noise_ratio", "sin_theta")
    axes[0].set(
        xscale="log",
        xlabel="noise heteroskedasticity (max / min variance)",
        ylabel="sin-theta distance to U*",
        title=f"recovery of U*, d = {noise_records[0]['dim']}",
    )
    _plot_lines(axes[1], dimension_records, "dim", "sin_theta")
    axes[1].set(
        xscale="log",
        xlabel="dimension d (n = 40 d)",
        ylabel="sin-theta distance to U*",
        title=f"heteroskedastic noise (ratio {dimension_records[0]['noise_ratio']:g})",
    )
    axes[1].set_xticks(sorted({r["dim"] for r in dimension_records}))
    axes[1].get_xaxis().set_major_formatter(ScalarFormatter())
    axes[1].minorticks_off()
    _plot_lines(axes[2], noise_records, "noise_ratio", "r2")
    axes[2].set(
        xscale="log",
        xlabel="noise heteroskedasticity (max / min variance)",
        ylabel="downstream R² (regress z on Wx)",
        title="downstream linear regression",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def plot_label_fraction(records, path) -> None:
    """Writes in-domain and transfer accuracy against the labelled fraction to ``path``.

    Args:
      records: output of `label_fraction_sweep`.
      path: PNG file to write.
    """
    fig = Figure(figsize=(8.5, 3.8))
    ax = fig.subplots()
    for method, linestyle in (("SupCon (trained)", "-"), ("linear loss (closed form)", ":")):
        for task, color in (("in_domain", "tab:green"), ("transfer", "tab:purple")):
            xs, mean, std = _mean_std(records, "fraction", task, method)
            label = f"{task.replace('_', '-')}, {method}"
            ax.errorbar(
                xs,
                mean,
                yerr=std,
                label=label,
                color=color,
                linestyle=linestyle,
                marker="o",
                capsize=3,
                markersize=4,
            )
    ax.axhline(1 / 8, color="gray", linewidth=0.8, linestyle="--", label="chance (1/8)")
    ax.set(
        xlabel="fraction of training examples with source labels",
        ylabel="linear-probe accuracy (8 classes)",
        title="labels help in-domain, hurt transfer",
        ylim=(0, 1),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: Sequence[str] | None = None) -> dict:
    """Command line: runs the three sweeps, writes the figures and a JSON of results.

    Args:
      argv: command-line arguments (``--out``, ``--seeds``); ``None`` reads sys.argv.

    Returns:
      The records of the three sweeps, keyed by sweep name.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/figures", help="output directory")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per point")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    seeds = tuple(range(args.seeds))
    results = {
        "noise_sweep": noise_sweep(seeds=seeds),
        # Two seeds: every d compiles the trained methods afresh.
        "dimension_sweep": dimension_sweep(seeds=seeds[:2]),
        "label_fraction_sweep": label_fraction_sweep(seeds=seeds[:2]),
    }
    plot_spiked_covariance(
        results["noise_sweep"],
        results["dimension_sweep"],
        os.path.join(args.out, "theory_spiked_covariance.png"),
    )
    plot_label_fraction(
        results["label_fraction_sweep"], os.path.join(args.out, "theory_label_fraction.png")
    )
    with open(os.path.join(args.out, "theory_spiked_covariance.json"), "w") as f:
        json.dump(results, f, indent=1)
    _print_summary(results)
    return results


def _print_summary(results) -> None:
    for sweep, x_key, y_keys in (
        ("noise_sweep", "noise_ratio", ("sin_theta", "sin_theta_to_regression_subspace", "r2")),
        ("dimension_sweep", "dim", ("sin_theta",)),
        ("label_fraction_sweep", "fraction", ("in_domain", "transfer")),
    ):
        records = results[sweep]
        print(f"\n{sweep}")
        for method in dict.fromkeys(r["method"] for r in records):
            for y_key in y_keys:
                xs, mean, std = _mean_std(records, x_key, y_key, method)
                cells = "  ".join(
                    f"{x:g}: {m:.3f}±{s:.3f}" for x, m, s in zip(xs, mean, std, strict=True)
                )
                print(f"  {method:26s} {y_key[:14]:14s} {cells}")


if __name__ == "__main__":
    main()
