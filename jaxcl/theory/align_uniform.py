"""Experiment 3: alignment and uniformity track downstream accuracy (Wang & Isola 2020).

Two pieces:

* `plot_alignment_uniformity(points, path)`: the alignment-uniformity plane
  (x = uniformity, y = alignment, lower-left is better, colour = accuracy) for
  any set of encoders, e.g. the numbers that ``python -m jaxcl.eval
  --workdir=DIR`` reports for saved runs.
* a small experiment on synthetic data (`clustered_data`): a two-layer MLP
  trained with NT-Xent at several temperatures and with Wang & Isola's
  align + uniform loss at several weights, plus an untrained encoder and the
  collapsing alignment-only loss. Run::

      python -m jaxcl.theory.align_uniform --out=docs/figures

  It writes ``theory_align_uniform.png`` and ``theory_align_uniform.json``
  and takes under a minute on two CPU cores.

Reference: Wang & Isola, "Understanding Contrastive Representation Learning
through Alignment and Uniformity on the Hypersphere", ICML 2020,
https://arxiv.org/abs/2005.10242
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import matplotlib as mpl
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from tqdm.auto import tqdm

from jaxcl import losses
from jaxcl.theory.downstream import knn_classification_probe
from jaxcl.theory.subspace import orthonormal_columns
from jaxcl.theory.training import train

__all__ = [
    "align_uniform_metrics",
    "clustered_data",
    "clustered_views",
    "main",
    "plot_alignment_uniformity",
    "run_experiment",
]


def _as_records(points) -> list[dict]:
    if isinstance(points, Mapping):
        records = []
        for name, values in points.items():
            if len(values) not in (2, 3):
                raise ValueError(
                    f"point {name!r} has {len(values)} values; pass (alignment, uniformity) "
                    "or (alignment, uniformity, accuracy)."
                )
            accuracy = values[2] if len(values) == 3 else None
            alignment, uniformity = values[:2]
            records.append(
                {
                    "name": name,
                    "alignment": alignment,
                    "uniformity": uniformity,
                    "accuracy": accuracy,
                }
            )
        return records
    records = []
    for record in points:
        missing = {"name", "alignment", "uniformity"} - set(record)
        if missing:
            raise ValueError(f"record {record} lacks {sorted(missing)}.")
        records.append({"accuracy": None, **record})
    return records


def plot_alignment_uniformity(points, path, *, title: str | None = None) -> str:
    """Draws encoders on the alignment-uniformity plane and writes a PNG.

    Each encoder is a point at x = uniformity, y = alignment (both lower is
    better, so the best encoders sit at the lower left). When accuracies are
    given, points are coloured by accuracy; encoders without one are drawn
    hollow. Records may carry a ``group`` (e.g. the training objective), which
    picks the marker shape and names it in the legend.

    Args:
      points: either a dict ``{name: (alignment, uniformity)}`` (optionally
        ``(alignment, uniformity, accuracy)``), or a list of records (dicts)
        with keys ``name``, ``alignment``, ``uniformity`` and optionally
        ``accuracy`` (None allowed) and ``group``, e.g. the metrics that
        ``jaxcl.eval`` reports for saved encoders.
      path: where to write the PNG.
      title: figure title.

    Returns:
      ``path``.

    Examples:
      >>> plot_alignment_uniformity(  # doctest: +SKIP
      ...     {"simclr": (0.45, -3.1, 0.88), "random init": (0.95, -2.0, 0.41)}, "au.png")

    References:
      Wang & Isola, ICML 2020, https://arxiv.org/abs/2005.10242 (Figure 5).
    """
    records = _as_records(points)
    if not records:
        raise ValueError("points is empty; pass at least one encoder.")
    accuracies = [r["accuracy"] for r in records if r.get("accuracy") is not None]
    norm = None
    if accuracies:
        low, high = min(accuracies), max(accuracies)
        # One accuracy (or all equal) still needs a range to colour against.
        spread = max(high - low, 0.1) - (high - low)
        norm = Normalize(low - spread / 2, high + spread / 2)
    colormap = mpl.colormaps["viridis"]
    groups = list(dict.fromkeys(r.get("group") for r in records))
    markers = dict(zip(groups, "osD^vPX*", strict=False))
    fig = Figure(figsize=(8, 5.5))
    ax = fig.subplots()
    for group in groups:
        members = [r for r in records if r.get("group") == group]
        for filled in (True, False):
            chosen = [r for r in members if (r.get("accuracy") is not None) == filled]
            if not chosen:
                continue
            face = [colormap(norm(r["accuracy"])) for r in chosen] if filled else "none"
            ax.scatter(
                [r["uniformity"] for r in chosen],
                [r["alignment"] for r in chosen],
                marker=markers[group],
                facecolors=face,
                edgecolors="black" if filled else "gray",
                linewidths=0.6,
                s=70,
                zorder=3,
            )
    if accuracies:
        mappable = ScalarMappable(norm=norm, cmap=colormap)
        fig.colorbar(mappable, ax=ax, label="downstream accuracy")
    if any(group is not None for group in groups):
        # Neutral proxies: the real markers are coloured by accuracy.
        handles = [
            Line2D(
                [],
                [],
                marker=markers[group],
                linestyle="none",
                markerfacecolor="lightgray",
                markeredgecolor="black",
                label=str(group),
            )
            for group in groups
        ]
        ax.legend(handles=handles, fontsize=8, loc="lower left")
    x_span = np.ptp([r["uniformity"] for r in records]) or 1.0
    y_span = np.ptp([r["alignment"] for r in records]) or 1.0
    labelled = []
    for record in records:
        x, y = record["uniformity"], record["alignment"]
        label = record["name"]
        if record.get("accuracy") is not None:
            label += f" ({record['accuracy']:.3f})"
        # Neighbours' labels would overprint this one: move it a line down per neighbour.
        crowd = sum(
            abs(x - lx) < 0.1 * x_span and abs(y - ly) < 0.05 * y_span for lx, ly in labelled
        )
        labelled.append((x, y))
        ax.annotate(
            label, (x, y), textcoords="offset points", xytext=(6, -3 - 9 * crowd), fontsize=7
        )
    ax.margins(x=0.2, y=0.1)
    ax.set(
        xlabel="uniformity  log E exp(-2||f(x)-f(y)||²)  (lower is better)",
        ylabel="alignment  E ||f(x)-f(x⁺)||²  (lower is better)",
        title=title or "alignment and uniformity (lower left is better)",
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


# --- Synthetic experiment -----------------------------------------------------


def clustered_data(
    seed: int,
    num_samples: int,
    *,
    num_classes: int = 10,
    latent_dim: int = 8,
    dim: int = 32,
    class_spread: float = 0.7,
) -> dict:
    """Labelled examples whose class lives in a subspace of the input.

    The content of an example is ``G^T (mu_y + class_spread * eps)``: a class
    prototype ``mu_y ~ N(0, I)`` in a ``latent_dim`` subspace plus within-class
    variation. The remaining directions of the input carry only nuisance,
    which `clustered_views` redraws for every view, so an encoder that
    ignores it is aligned and one that keeps the content's variation is
    uniform.

    Args:
      seed: seed of the prototypes, the subspace and the examples.
      num_samples: n.
      num_classes: C.
      latent_dim: dimension of the content subspace.
      dim: input dimension d > latent_dim.
      class_spread: within-class standard deviation relative to the prototypes.

    Returns:
      ``{"content": (n, d), "label": (n,), "nuisance_basis": (d - latent, d)}``.
    """
    rng = np.random.default_rng(seed)
    basis = orthonormal_columns(rng.standard_normal((dim, dim))).T
    content_basis, nuisance_basis = basis[:latent_dim], basis[latent_dim:]
    prototypes = rng.standard_normal((num_classes, latent_dim))
    labels = rng.integers(0, num_classes, num_samples)
    latent = prototypes[labels] + class_spread * rng.standard_normal((num_samples, latent_dim))
    return {
        "content": (latent @ content_basis).astype(np.float32),
        "label": labels.astype(np.int32),
        "nuisance_basis": nuisance_basis.astype(np.float32),
    }


def clustered_views(
    key, content, nuisance_basis, *, nuisance_std: float = 1.5, content_noise: float = 0.5
):
    """Two views: independent nuisance, and content perturbed by isotropic noise.

    The nuisance directions can be ignored exactly; the content noise cannot
    (it lives where the classes do), so perfect alignment would require
    collapsing the content too. Alignment and uniformity then trade off, as
    with real augmentations.

    Args:
      key: PRNG key.
      content: (n, d) contents from `clustered_data`.
      nuisance_basis: (d - latent, d) orthonormal nuisance directions.
      nuisance_std: standard deviation of the nuisance per direction.
      content_noise: standard deviation of the noise added to every input
        coordinate (so also to the content subspace).

    Returns:
      Two (n, d) arrays.
    """
    views = []
    for view_key in jax.random.split(key, 2):
        nuisance_key, noise_key = jax.random.split(view_key)
        coefficients = jax.random.normal(nuisance_key, (content.shape[0], nuisance_basis.shape[0]))
        noise = content_noise * jax.random.normal(noise_key, content.shape)
        views.append(content + nuisance_std * coefficients @ nuisance_basis + noise)
    return views[0], views[1]


def _encoder(params, x):
    hidden = jax.nn.relu(x @ params["w1"].T + params["b1"])
    return hidden @ params["w2"].T


def _nt_xent_objective(params, batch, key, hyper):
    x1, x2 = clustered_views(key, batch["content"], hyper["nuisance_basis"])
    return losses.nt_xent(
        _encoder(params, x1), _encoder(params, x2), temperature=hyper["temperature"]
    )


def _align_uniform_objective(params, batch, key, hyper):
    x1, x2 = clustered_views(key, batch["content"], hyper["nuisance_basis"])
    z1, z2 = _encoder(params, x1), _encoder(params, x2)
    # Wang & Isola's objective: align + weight * (unif(z1) + unif(z2)) / 2.
    uniform = (losses.uniformity(z1) + losses.uniformity(z2)) / 2
    return losses.alignment(z1, z2) + hyper["uniformity_weight"] * uniform


def align_uniform_metrics(z1, z2) -> dict:
    """Alignment (alpha 2) and uniformity (t 2) of paired embeddings, as in Wang & Isola.

    Uniformity is the mean of the two views' uniformities, as in the paper's
    objective. Both use `jaxcl.losses`, which L2-normalises the embeddings.

    Args:
      z1: (n, k) embeddings of first views.
      z2: (n, k) embeddings of second views.

    Returns:
      ``{"alignment": float, "uniformity": float}``.
    """
    uniform = (losses.uniformity(z1) + losses.uniformity(z2)) / 2
    return {"alignment": float(losses.alignment(z1, z2)), "uniformity": float(uniform)}


def _init(seed, dim, hidden, output):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "w1": jax.random.normal(k1, (hidden, dim)) / np.sqrt(dim),
        "b1": jnp.zeros((hidden,)),
        "w2": jax.random.normal(k2, (output, hidden)) / np.sqrt(hidden),
    }


def run_experiment(
    *,
    temperatures: Sequence[float] = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
    uniformity_weights: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
    num_samples: int = 4096,
    steps: int = 600,
    hidden: int = 64,
    output: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> list[dict]:
    """Trains the MLP encoder with each objective and measures it on held-out data.

    Objectives: NT-Xent at each temperature; align + w * uniform at each
    weight w (w = 0 is alignment alone, which collapses); and the untrained
    encoder. Metrics on 2048 held-out examples: alignment, uniformity (of the
    L2-normalised output) and the 10-nearest-neighbour accuracy (cosine) of
    the output against 1024 other labelled held-out examples.

    Args:
      temperatures: NT-Xent temperatures.
      uniformity_weights: weights of the uniformity term.
      num_samples: training examples (labels unused by the encoder).
      steps: Adam steps per objective.
      hidden: hidden width of the MLP.
      output: embedding dimension.
      seed: seed of the data and the initialisation.
      progress: show a tqdm bar.

    Returns:
      One record per encoder: ``name, group, alignment, uniformity, accuracy``.
    """
    data = clustered_data(seed, num_samples + 3072)
    train_rows = slice(0, num_samples)
    probe_rows = slice(num_samples, num_samples + 1024)
    test_rows = slice(num_samples + 1024, None)
    dim = data["content"].shape[1]
    init = _init(seed, dim, hidden, output)
    jobs = [("untrained", "untrained", None, None, None)]
    jobs += [
        (f"T={t:g}", "NT-Xent (temperature T)", _nt_xent_objective, "temperature", t)
        for t in temperatures
    ]
    jobs += [
        (
            f"w={w:g}",
            "align + w·uniform (w = 0: align only)",
            _align_uniform_objective,
            "uniformity_weight",
            w,
        )
        for w in uniformity_weights
    ]
    content = jnp.asarray(data["content"])
    records = []
    for name, group, objective, hyper_name, value in tqdm(
        jobs, desc="align-uniform", disable=not progress, leave=False
    ):
        params = init
        if objective is not None:
            params = train(
                objective,
                init,
                {"content": content[train_rows]},
                key=jax.random.key(seed + 1),
                steps=steps,
                learning_rate=0.01,
                batch_size=256,
                hyper={hyper_name: value, "nuisance_basis": data["nuisance_basis"]},
            ).params
        z_probe, z_test, alignment, uniformity = _embed_held_out(
            params,
            content[probe_rows],
            content[test_rows],
            data["nuisance_basis"],
            jax.random.key(seed + 2),
        )
        accuracy = knn_classification_probe(
            z_probe, data["label"][probe_rows], z_test, data["label"][test_rows]
        )
        records.append(
            {
                "name": name,
                "group": group,
                "alignment": float(alignment),
                "uniformity": float(uniformity),
                "accuracy": accuracy,
            }
        )
    return records


@jax.jit
def _embed_held_out(params, probe_content, test_content, nuisance_basis, key):
    # One compiled evaluation: op-by-op dispatch would compile every small op
    # separately, which costs more than the evaluation itself on a CPU.
    probe_key, test_key = jax.random.split(key)
    probe_view, _ = clustered_views(probe_key, probe_content, nuisance_basis)
    test_1, test_2 = clustered_views(test_key, test_content, nuisance_basis)
    z1, z2 = _encoder(params, test_1), _encoder(params, test_2)
    uniform = (losses.uniformity(z1) + losses.uniformity(z2)) / 2
    return _encoder(params, probe_view), z1, losses.alignment(z1, z2), uniform


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Command line: runs `run_experiment`, writes the plane plot and a JSON.

    Args:
      argv: command-line arguments (``--out``, ``--seed``); ``None`` reads sys.argv.

    Returns:
      The records of `run_experiment`.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/figures", help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    records = run_experiment(seed=args.seed)
    plot_alignment_uniformity(
        records,
        os.path.join(args.out, "theory_align_uniform.png"),
        title="MLP encoders on synthetic clusters (colour = 10-NN accuracy)",
    )
    from scipy.stats import spearmanr

    # The untrained and the collapsed (align-only) encoders are the obvious
    # extremes; the question is whether the metrics also rank the rest.
    trained = [r for r in records if r["name"] not in ("untrained", "w=0")]
    correlations = {
        metric: float(
            spearmanr([r[metric] for r in trained], [r["accuracy"] for r in trained]).statistic
        )
        for metric in ("alignment", "uniformity")
    }
    with open(os.path.join(args.out, "theory_align_uniform.json"), "w") as f:
        json.dump({"records": records, "spearman_with_accuracy": correlations}, f, indent=1)
    for r in records:
        print(
            f"{r['group'][:7]:8s}{r['name']:8s} alignment {r['alignment']:.3f}  "
            f"uniformity {r['uniformity']:.3f}  accuracy {r['accuracy']:.3f}"
        )
    print(f"Spearman correlation with accuracy (trained, non-collapsed): {correlations}")
    return records


if __name__ == "__main__":
    main()
