"""Semi-supervised fine-tuning: the whole network trained on few labels (SimCLR's 2nd protocol).

SimCLR (Chen et al. 2020, arXiv:2002.05709, Appendix B.5) and SimCLR v2 (Chen
et al. 2020, arXiv:2006.10029) fine-tune a contrastively pretrained encoder end
to end on 1% or 10% of ImageNet's labels and compare it with the same network
trained from scratch on those labels. ``FineTuner`` is that network and step:

* the pretrained encoder (``params['encoder']`` and its BatchNorm statistics of
  the run in ``finetune.pretrained``, or the encoder of a published PyTorch or
  TF weights file there, ``jaxcl.weights``; a random one when it is empty), then
  the first ``finetune.from_projection_layer`` layers of its projection head
  (SimCLR v2's ``ft_proj_selector``: v2 fine-tunes from the first layer of its
  3-layer head), then a new linear classifier;
* softmax cross-entropy on a class-balanced labelled subset of the evaluation
  train split (`jaxcl.data.class_balanced_subset`), one view of each example
  with random crop and flip only;
* BatchNorm in training mode (global over the data mesh, as in pretraining),
  SGD with Nesterov momentum and no weight decay by default (SimCLR v1's
  recipe), for a fixed number of epochs of the subset.

It has the interface ``jaxcl.train.train`` drives (``config``, ``mesh``,
``data``, ``total_steps``, ``initial_state``, ``abstract_state``,
``train_step``), so fine-tuning gets the same loop: checkpoints, exact resume,
SIGTERM handling, metrics, progress bar. ``finetune_and_evaluate`` composes
it with the test-split evaluation and ``results.json``.

A fine-tuning run's config is the base training config (the pretrained run's
``config.json``, or ``finetune.base_config`` from scratch) with its
optimisation keys replaced by the fine-tuning recipe's and a ``finetune``
section saying what was fine-tuned; it is the workdir's ``config.json``.
"""

from __future__ import annotations

import functools
import logging
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcl import configs, data, distributed, optim, weights, workdir_identity, workdir_io
from jaxcl.checkpoint import abstract_like
from jaxcl.config import ConfigError, load_config, validate_config
from jaxcl.contrastive_network import build_network, online_probe_metrics, resolve_compute_dtype
from jaxcl.distributed import DATA_AXIS
from jaxcl.features import stream_features
from jaxcl.methods import get_method
from jaxcl.models import functional
from jaxcl.models.layers import dense
from jaxcl.restore import restore_run
from jaxcl.train import train

__all__ = [
    "FineTuneNetwork",
    "FineTuner",
    "default_finetune_config",
    "finetune_and_evaluate",
    "finetune_run_config",
]

# The recipe's keys that replace the base config's keys of the same name.
_OPTIMISATION_KEYS = (
    "global_batch_size",
    "num_epochs",
    "num_steps",
    "optimizer",
    "learning_rate",
    "learning_rate_scaling",
    "warmup_epochs",
    "weight_decay",
    "momentum",
    "seed",
    "log_every_steps",
    "checkpoint_every_steps",
    "progress_bar",
)
# Augmentation of the labelled examples: the base preset's crop and flip only.
_CROP_AND_FLIP = {"jitter_prob": 0.0, "grayscale_prob": 0.0, "blur_prob": 0.0, "solarize_prob": 0.0}
_OPTIMIZERS = ("sgd", "lars", "adamw")


def default_finetune_config() -> ml_collections.ConfigDict:
    """The fine-tuning recipe: SimCLR v1's (Appendix B.5) at Fashion-MNIST's size.

    Keys:
      base_config: the training config of a run from scratch: a recipe name of
        ``jaxcl/configs`` with an optional variant (``simclr_fashion_mnist:smoke``),
        or a run's workdir (its network and data, from a random initialisation:
        the baseline of that run's fine-tuning); ignored with ``--pretrained``,
        whose run's own config is the base.
      label_fraction: keep this fraction of each class of the labelled split.
      labels_per_class: or exactly this many per class (> 0 overrides the fraction).
      subset_seed: the seed of the labelled subset (the same subset for every
        method, seed and process count).
      from_projection_layer: how many layers of the pretrained projection head
        stay under the classifier (0: the encoder's features; SimCLR v2: 1).
      drop_path_rate: a ViT's stochastic depth while fine-tuning (MoCo v3 and
        DeiT fine-tune ViT-B with 0.1); each example's drops come from (seed,
        step, example index), so 8 devices still equal 1.
      image_size: the side of the training crops (0: the base run's evaluation
        size, the size the test images are scored at).
      nesterov: Nesterov momentum (SGD and LARS).
      eval_batch_size: test-split batch size.
      the rest: as in ``jaxcl.config.default_config``, for the fine-tuning run.

    Returns:
      A locked ``ml_collections.ConfigDict``.
    """
    config = ml_collections.ConfigDict()
    config.base_config = "simclr_fashion_mnist"
    config.label_fraction = 0.01
    config.labels_per_class = 0
    config.subset_seed = 0
    config.from_projection_layer = 0
    config.drop_path_rate = 0.0
    config.image_size = 0
    # SimCLR v1: Nesterov momentum, lr 0.05 x B/256, no warmup, no weight
    # decay; 60 epochs of the subset at 1%, 30 at 10%.
    config.optimizer = "sgd"
    config.nesterov = True
    config.learning_rate = 0.05
    config.learning_rate_scaling = "linear"
    config.momentum = 0.9
    config.weight_decay = 0.0
    config.warmup_epochs = 0.0
    config.global_batch_size = 64
    config.num_epochs = 60.0
    config.num_steps = 0
    config.seed = 0
    config.eval_batch_size = 500
    config.log_every_steps = 20
    config.checkpoint_every_steps = 200
    config.progress_bar = True
    config.lock()
    return config


def _is_run(path: str) -> bool:
    """Whether ``path`` is the workdir of a jaxcl run (else: a published weights file)."""
    return (workdir_io.resolve(path) / "config.json").exists()


def _check_pretrained(recipe, pretrained: str) -> None:
    """Refuses a ``--pretrained`` that is neither a run nor a weights file, up front."""
    if not pretrained or _is_run(pretrained):
        return
    exists = workdir_io.resolve(pretrained).exists()
    if not (exists or workdir_io.resolve(f"{pretrained}.index").exists()):
        raise ConfigError(
            "pretrained", pretrained, "does not exist",
            "pass a jaxcl run's workdir, a PyTorch file or a TF checkpoint; '' trains from scratch",
        )  # fmt: skip
    if recipe.from_projection_layer:
        raise ConfigError(
            "from_projection_layer", recipe.from_projection_layer,
            f"needs a pretrained projection head, and {pretrained} holds an encoder only",
            "use 0, or fine-tune a jaxcl run's workdir",
        )  # fmt: skip


def _base_config(recipe, pretrained: str) -> ml_collections.ConfigDict:
    """The training config the fine-tuning run starts from (see ``base_config``)."""
    if pretrained and _is_run(pretrained):
        return load_config(pretrained)
    if not recipe.base_config:
        raise ConfigError(
            "base_config", "", "names no network to train from scratch or to load weights into",
            "set it, e.g. --config.base_config=simclr_fashion_mnist",
        )  # fmt: skip
    if (workdir_io.resolve(recipe.base_config) / "config.json").exists():
        return load_config(recipe.base_config)  # a run's network, trained afresh
    name, _, arg = recipe.base_config.partition(":")
    return configs.get_config(name, arg)


def finetune_run_config(recipe, pretrained: str = "") -> ml_collections.ConfigDict:
    """The config of a fine-tuning run: the base config with the recipe applied.

    Args:
      recipe: a fine-tuning recipe (``default_finetune_config`` keys).
      pretrained: the workdir of the pretraining run, or a published weights
        file (a PyTorch file or SimCLR TF checkpoint of ``base_config``'s
        encoder, see ``jaxcl.weights``); '' trains from scratch.

    Returns:
      A locked ConfigDict: the base training config with the recipe's
      optimisation keys, a single view, and a ``finetune`` section (the recipe
      and ``pretrained``).

    Raises:
      ValueError: a recipe value out of range (one line, with the fix).
    """
    _check_recipe(recipe)
    _check_pretrained(recipe, pretrained)
    config = _base_config(recipe, pretrained)
    if recipe.drop_path_rate > 0.0 and not config.model.startswith("vit"):
        raise ConfigError(
            "drop_path_rate", recipe.drop_path_rate,
            f"is a ViT's option and the network is {config.model!r}", "use 0.0",
        )  # fmt: skip
    config.unlock()
    for key in _OPTIMISATION_KEYS:
        config[key] = recipe[key]
    if recipe.drop_path_rate > 0.0:
        config.model_options = {**config.model_options, "drop_path_rate": recipe.drop_path_rate}
    section = ml_collections.ConfigDict(recipe.to_dict())
    section.pretrained = pretrained
    config.finetune = section
    # The pretraining's monitors do not apply: no kNN monitor, no probe weight.
    config.knn_every_steps = 0
    config.lock()
    return config


def _check_recipe(recipe) -> None:
    checks = [
        (0.0 < recipe.label_fraction <= 1.0, "label_fraction", "in (0, 1], e.g. 0.01"),
        (recipe.labels_per_class >= 0, "labels_per_class", ">= 0 (0: use label_fraction)"),
        (recipe.from_projection_layer >= 0, "from_projection_layer", ">= 0"),
        (0.0 <= recipe.drop_path_rate < 1.0, "drop_path_rate", "in [0, 1), e.g. 0.1"),
        (recipe.image_size >= 0, "image_size", ">= 0 (0: the evaluation size)"),
        (recipe.eval_batch_size >= 1, "eval_batch_size", ">= 1"),
        (recipe.optimizer in _OPTIMIZERS, "optimizer", f"one of {', '.join(_OPTIMIZERS)}"),
    ]
    for ok, key, expected in checks:
        if not ok:
            raise ConfigError(key, recipe[key], "is out of range", f"use a value {expected}")


class FineTuneNetwork(nnx.Module):
    """Encoder, the first layers of a projection head, and a linear classifier.

    Attributes:
      encoder: the (pretrained) encoder.
      projector: the pretrained projection head (None when no layer of it is kept).
      num_projection_layers: how many of its layers run under the classifier.
      classifier: a linear layer to the class logits.
    """

    def __init__(self, encoder, projector, num_projection_layers: int, num_classes: int, *, rngs):
        """Wraps the pretraining network's parts.

        Args:
          encoder: an encoder module (NHWC images -> features).
          projector: a ``SimCLRv2Projection`` (used when ``num_projection_layers`` > 0).
          num_projection_layers: layers of ``projector`` kept, fewer than it has.
          num_classes: logits of the classifier.
          rngs: NNX random generators (the classifier's initialisation).
        """
        self.encoder = encoder
        self.num_projection_layers = num_projection_layers
        self.projector = projector if num_projection_layers else None
        width = encoder.num_features
        if num_projection_layers:
            width = getattr(projector, f"dense{num_projection_layers - 1}").out_features
        # SimCLR's fine-tuning head starts at zero: the first steps train the
        # classifier on the pretrained features instead of perturbing them.
        self.classifier = dense(width, num_classes, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, images: jax.Array, *, rng: jax.Array | None = None) -> jax.Array:
        """Class logits (float32) of NHWC images; `rng`: the encoder's drop-path keys."""
        x = self.encoder(images) if rng is None else self.encoder(images, rng=rng)
        for index in range(self.num_projection_layers):
            x = getattr(self.projector, f"bn{index}")(getattr(self.projector, f"dense{index}")(x))
            x = nnx.relu(x)  # kept layers are hidden layers: all end in a ReLU
        return self.classifier(x).astype(jnp.float32)


class _SubsetData:
    """The labelled subset's batches, as ``jaxcl.train.train_batches`` reads them."""

    augment_on_device = False

    def __init__(self, spec: data.DataSpec, example_indices: np.ndarray, image_size: int):
        self.spec, self.example_indices, self.image_size = spec, example_indices, image_size

    def train_iterator(self, start_step: int = 0):
        return self.spec.train_iterator(
            start_step,
            split=self.spec.eval_train_split,
            num_views=1,
            image_size=self.image_size,
            augment_options={**self.spec.augment_options, **_CROP_AND_FLIP},
            augment_on_device=False,
            example_indices=self.example_indices,
        )


class FineTuner:
    """Everything static about a fine-tuning run: network, subset, optimizer and step.

    Args:
      config: a fine-tuning run's config (``finetune_run_config``).
      mesh: the data mesh (default: all devices).
    """

    def __init__(self, config, mesh=None):
        self.config = config
        self.settings = config.finetune
        self.mesh = mesh if mesh is not None else distributed.data_mesh()
        validate_config(_pretraining_part(config), num_devices=self.mesh.size)
        self.method = get_method(config.method)
        spec = data.DataSpec.from_config(config)
        self.num_classes = spec.info.num_classes
        self.in_channels = spec.info.image_shape[-1]
        self.image_size = self.settings.image_size or spec.eval_image_size
        self.subset = _labelled_subset(spec, self.settings)
        self.data = _SubsetData(spec, self.subset, self.image_size)
        self.eval_spec = spec
        batch = config.global_batch_size
        if len(self.subset) < batch:
            raise ConfigError(
                "global_batch_size", batch,
                f"exceeds the {len(self.subset)} examples of the labelled subset",
                "lower it or raise label_fraction",
            )  # fmt: skip
        self.steps_per_epoch = len(self.subset) // batch
        epochs_in_steps = max(1, round(config.num_epochs * self.steps_per_epoch))
        self.total_steps = int(config.num_steps) if config.num_steps > 0 else epochs_in_steps
        peak = optim.scaled_learning_rate(config.learning_rate, batch, config.learning_rate_scaling)
        warmup = round(config.warmup_epochs * self.steps_per_epoch)
        self.learning_rate = optim.learning_rate_schedule(peak, self.total_steps, warmup)
        self.optimizer = optim.create_optimizer(
            config.optimizer,
            self.learning_rate,
            weight_decay=config.weight_decay,
            momentum=config.momentum,
            trust_coefficient=config.trust_coefficient,
            nesterov=self.settings.nesterov,
        )
        self.compute_dtype = resolve_compute_dtype(config.compute_dtype)
        self.drop_path = float(config.model_options.get("drop_path_rate", 0.0)) > 0.0
        # Drop-path draws per example from its dataset index (see _train_step).
        self.extra_batch_keys = ("index",) if self.drop_path else ()
        kept = self.settings.from_projection_layer
        if kept and config.projector != "simclr_v2_projection":
            raise ConfigError(
                "from_projection_layer", kept,
                f"needs a simclr_v2_projection head (the run's projector is {config.projector!r})",
                "use 0: fine-tune from the encoder's features",
            )  # fmt: skip
        network = nnx.eval_shape(self._network)
        layers = network.projector.num_layers if network.projector is not None else 0
        if kept and kept >= layers:
            raise ConfigError(
                "from_projection_layer", kept,
                f"needs a projection head of more than {layers} layers (its last layer is the "
                "projection itself)", f"use 0 to {layers - 1}",
            )  # fmt: skip
        self.graphdef = functional.split(network)[0]
        self.replicated = NamedSharding(self.mesh, P())
        self.train_step = jax.jit(
            self._train_step, donate_argnums=0, out_shardings=(self.replicated, self.replicated)
        )

    def _network(self) -> FineTuneNetwork:
        rngs = nnx.Rngs(self.config.seed)
        pretraining = build_network(
            self.config,
            self.method,
            num_classes=self.num_classes,
            in_channels=self.in_channels,
            bn_axis_name=DATA_AXIS,
            rngs=rngs,
            online=False,
        )
        return FineTuneNetwork(
            pretraining.encoder,
            pretraining.projector,
            self.settings.from_projection_layer,
            self.num_classes,
            rngs=rngs,
        )

    # ----------------------------------------------------------------- state

    def _init_state(self, pretrained_variables):
        _, params, batch_stats = functional.split(self._network())
        if pretrained_variables is not None:
            pretrained_params, pretrained_stats = pretrained_variables
            params = {**params, **pretrained_params}
            batch_stats = {**batch_stats, **pretrained_stats}
        return {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "batch_stats": batch_stats,
            "opt_state": self.optimizer.init(params),
        }

    def _pretrained_variables(self):
        """The pretrained run's encoder (and kept head) variables, or None from scratch."""
        source = self.settings.pretrained
        if not source:
            return None
        if not _is_run(source):
            return self._imported_encoder(source)
        run = restore_run(self.settings.pretrained, mesh=self.mesh, check_data_files=False)
        parts = ("encoder", "projector") if self.settings.from_projection_layer else ("encoder",)
        params = {part: run.state["params"][part] for part in parts}
        saved_stats = run.state["batch_stats"]
        stats = {part: saved_stats[part] for part in parts if part in saved_stats}
        logging.info("fine-tuning %s of %s at step %d", parts, self.settings.pretrained, run.step)
        return params, stats

    def _imported_encoder(self, source: str):
        """The encoder arrays of a published weights file, checked against the config's."""
        config = self.config
        options = {
            **dict(config.model_options),
            "in_channels": self.in_channels,
            "dtype": self.compute_dtype,
        }
        encoder = weights.import_encoder_file(source, config.model, **options)
        _, params, stats = functional.split(encoder)
        _, expected_params, expected_stats = functional.split(nnx.eval_shape(self._network))
        expected = (expected_params["encoder"], expected_stats.get("encoder", {}))
        where = f"--pretrained={source!r}"
        weights.check_same_encoder(
            where, (params, stats), expected, config.model, config.model_options
        )
        logging.info("fine-tuning the encoder of %s", source)
        return {"encoder": params}, ({"encoder": stats} if stats else {})

    def initial_state(self):
        """The first state: the pretrained parts (or random ones) and a new classifier."""
        variables = self._pretrained_variables()
        init = jax.jit(self._init_state, out_shardings=self.replicated)
        return init(variables)

    def abstract_state(self):
        """Shapes, dtypes and shardings of the state, for restoring checkpoints."""
        return abstract_like(jax.eval_shape(lambda: self._init_state(None)), self.replicated)

    # ------------------------------------------------------------------ step

    def _per_device_step(self, params, batch_stats, images, labels, example_keys):
        def loss_fn(params):
            logits, new_batch_stats = functional.apply(
                self.graphdef,
                params,
                batch_stats,
                images.astype(self.compute_dtype),
                train=True,
                rng=example_keys,
            )
            # Cross-entropy and top-1 over the labelled examples of the global batch.
            loss, top1 = online_probe_metrics(logits, labels, DATA_AXIS)
            return loss, (new_batch_stats, {"loss": loss, "train_top1": top1})

        grads, (new_batch_stats, metrics) = jax.grad(loss_fn, has_aux=True)(params)
        return grads, new_batch_stats, metrics

    def _train_step(self, state, batch):
        example_keys = None
        if self.drop_path:
            # A function of (seed, step, example): the same drops on any number of
            # devices, and on resume.
            step_key = jax.random.fold_in(jax.random.key(self.config.seed), state["step"])
            example_keys = jax.vmap(jax.random.fold_in, (None, 0))(step_key, batch["index"])
        sharded = jax.shard_map(
            self._per_device_step,
            mesh=self.mesh,
            in_specs=(P(), P(), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS)),
            out_specs=P(),
        )
        images = batch["views"][:, 0]
        grads, batch_stats, metrics = sharded(
            state["params"], state["batch_stats"], images, batch["label"], example_keys
        )
        updates, opt_state = self.optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new_state = {
            "step": state["step"] + 1,
            "params": params,
            "batch_stats": batch_stats,
            "opt_state": opt_state,
        }
        grad_norm, param_norm = optax.tree.norm(grads), optax.tree.norm(params)
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
        if self.config.nonfinite_loss == "skip":
            kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
            new_state = {**kept, "step": state["step"] + 1}
        metrics = {
            **metrics,
            "learning_rate": self.learning_rate(state["step"]),
            "grad_norm": grad_norm,
            "param_norm": param_norm,
            "finite": finite.astype(jnp.float32),
        }
        return new_state, metrics

    # ------------------------------------------------------------ evaluation

    @functools.cached_property
    def logits_fn(self):
        """``(variables, images) -> logits``: the network in evaluation mode, pure."""
        graphdef, dtype = self.graphdef, self.compute_dtype

        def logits(variables, images):
            network = nnx.merge(graphdef, variables["params"], variables["batch_stats"])
            network = nnx.view(
                network, use_running_average=True, deterministic=True, raise_if_not_found=False
            )
            return network(images.astype(dtype))

        return logits

    def test_top1(self, state) -> float:
        """Top-1 accuracy of the fine-tuned network on the whole test split."""
        variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
        batches = self.eval_spec.eval_iterator(
            self.eval_spec.eval_test_split, self.settings.eval_batch_size
        )
        with jax.set_mesh(self.mesh):
            scored = stream_features(
                self.logits_fn, variables, batches, self.mesh, description="test"
            )
        return float(np.mean(np.argmax(scored.features, axis=1) == scored.labels))


def _pretraining_part(config) -> ml_collections.ConfigDict:
    """``config`` without its ``finetune`` section and drop-path: what ``validate_config`` knows."""
    plain = ml_collections.ConfigDict(config.to_dict())
    del plain["finetune"]
    # Drop-path is wired into the fine-tuning step, not into pretraining's.
    plain.model_options = {k: v for k, v in plain.model_options.items() if k != "drop_path_rate"}
    return plain


def _labelled_subset(spec: data.DataSpec, settings) -> np.ndarray:
    """The indices of the labelled examples of the evaluation train split."""
    source = data.get_source(
        spec.dataset, spec.eval_train_split, spec.data_dir, spec.dataset_options
    )
    labels = getattr(source, "labels_np", None)
    if labels is None:
        raise ValueError(
            f"{spec.dataset} {spec.eval_train_split} is streamed, so its labels cannot be "
            "listed for a subset; set dataset_options={'in_memory': True} or use TFDS's "
            "imagenet2012_subset."
        )
    if settings.labels_per_class > 0:
        return data.class_balanced_subset(
            labels, per_class=settings.labels_per_class, seed=settings.subset_seed
        )
    return data.class_balanced_subset(
        labels, fraction=settings.label_fraction, seed=settings.subset_seed
    )


def finetune_and_evaluate(recipe, workdir: str, *, pretrained: str = "", fork: bool = False):
    """Fine-tunes (or trains from scratch) on a labelled subset and scores the test split.

    Running it again on the same ``workdir`` resumes from the newest checkpoint
    and gives the same parameters as an uninterrupted run (``jaxcl.train.train``).

    Args:
      recipe: the fine-tuning recipe (``default_finetune_config`` keys).
      workdir: directory for checkpoints, metrics, ``config.json`` and ``results.json``.
      pretrained: the ``--workdir`` of a pretraining run, or a published
        weights file of ``recipe.base_config``'s encoder; '' trains from scratch.
      fork: resume ``workdir`` under a changed config (``jaxcl.workdir_identity``).

    Returns:
      The results: ``finetune_top1`` (test split), ``label_fraction`` (the
      labelled examples over the split's), ``labelled_examples``,
      ``pretrained``, ``from_projection_layer``, ``steps``, ``train_seconds``
      and the last logged training metrics.
    """
    config = finetune_run_config(recipe, pretrained)
    workdir_identity.check_rerun(config, workdir, fork=fork)
    tuner = FineTuner(config)
    start = time.perf_counter()
    result = train(tuner, workdir, fork=fork)
    train_seconds = time.perf_counter() - start
    top1 = tuner.test_top1(result.state)
    labelled = data.get_source(
        tuner.eval_spec.dataset, tuner.eval_spec.eval_train_split,
        tuner.eval_spec.data_dir, tuner.eval_spec.dataset_options,
    ).num_examples  # fmt: skip
    results = {
        **{key: float(value) for key, value in result.summary.items()},
        "finetune_top1": top1,
        "label_fraction": len(tuner.subset) / labelled,
        "labelled_examples": len(tuner.subset),
        "pretrained": pretrained,
        "from_projection_layer": int(recipe.from_projection_layer),
        "steps": tuner.total_steps,
        "train_seconds": train_seconds,
    }
    if jax.process_index() == 0:
        workdir_io.write_json(workdir_io.resolve(workdir) / "results.json", results)
    return results
