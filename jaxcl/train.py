"""The training loop: ``train_and_evaluate(config, workdir)``, for every method.

Read top to bottom: configuration checks, the train state, the jitted step,
then the loop that feeds it, logs, checkpoints and evaluates.

Parallelism. One ``jax.jit``-compiled step runs over a one-axis data mesh that
spans every device of every process. Inside it, ``jax.shard_map`` gives each
device its slice of the batch: the network (with global BatchNorm over the
``'data'`` axis) and the loss (gathering candidates over the same axis) are
written per device, exactly as the single-device code. Parameters enter the
shard_map replicated, so JAX returns their gradient already summed over
devices: it is the gradient of the global-batch loss (tested against one
device with the whole batch in ``tests/test_train.py``). The optimizer update
runs once on the replicated gradient, outside the shard_map.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxcl import distributed, optim
from jaxcl.checkpoint import Checkpointer, abstract_like
from jaxcl.distributed import DATA_AXIS
from jaxcl.methods import Embeddings, get_method
from jaxcl.methods.base import monitoring_metrics
from jaxcl.methods.network import build_network, resolve_compute_dtype
from jaxcl.models import functional

__all__ = ["Trainer", "train_and_evaluate", "validate_config"]

TrainState = dict[str, Any]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def _options(config_value) -> dict:
    return dict(config_value) if config_value else {}


def validate_config(config: ml_collections.ConfigDict, *, num_devices: int) -> None:
    """Checks a config before anything expensive starts.

    Each problem raises a one-line ``ValueError`` naming the key, the value and
    the fix.

    Args:
      config: the training config.
      num_devices: devices of the data mesh (all processes).
    """
    from jaxcl import data, models
    from jaxcl.methods import METHOD_NAMES

    def fail(key, problem, fix):
        raise ValueError(f"config.{key}={config[key]!r} {problem}; {fix}.")

    if config.method not in METHOD_NAMES:
        fail("method", "is unknown", f"use one of {', '.join(METHOD_NAMES)}")
    if config.model not in models.available():
        fail("model", "is unknown", f"use one of {', '.join(models.available())}")
    if config.dataset not in data.DATASET_NAMES:
        fail("dataset", "is unknown", f"use one of {', '.join(data.DATASET_NAMES)}")
    if config.augmentation not in data.PRESET_NAMES:
        fail("augmentation", "is unknown", f"use one of {', '.join(data.PRESET_NAMES)}")
    if config.optimizer not in optim.OPTIMIZERS:
        fail("optimizer", "is unknown", f"use one of {', '.join(optim.OPTIMIZERS)}")
    if config.global_batch_size <= 0 or config.global_batch_size % num_devices:
        fail(
            "global_batch_size",
            f"is not a positive multiple of the {num_devices} devices",
            f"use a multiple of {num_devices}",
        )
    if config.temperature <= 0:
        fail("temperature", "must be > 0", "use e.g. 0.1 (SimCLR) or 0.2 (MoCo v2)")
    if config.num_steps <= 0 and config.num_epochs <= 0:
        fail("num_epochs", "and num_steps are both <= 0", "set one of them > 0")
    if config.method == "mocov2" and config.queue_size < config.global_batch_size:
        fail(
            "queue_size",
            f"is smaller than global_batch_size={config.global_batch_size}",
            "use a queue at least as large as the batch",
        )
    if config.method in ("mocov2", "mocov3") and not 0 <= config.momentum_encoder_decay < 1:
        fail("momentum_encoder_decay", "must be in [0, 1)", "use e.g. 0.99 or 0.999")
    if config.num_views < 2:
        fail("num_views", "must be >= 2", "contrastive methods need two views of each image")
    if config.nonfinite_loss not in ("raise", "skip"):
        fail("nonfinite_loss", "is unknown", "use 'raise' or 'skip'")
    if config.compute_dtype not in ("auto", "float32", "bfloat16", "float16"):
        fail("compute_dtype", "is unsupported", "use 'auto', 'float32' or 'bfloat16'")
    info = data.dataset_info(config.dataset, _options(config.dataset_options))
    native = info.image_shape[0]
    crop_larger = config.dataset != "synthetic" and config.image_size > 8 * native
    if config.image_size <= 0 or crop_larger:
        fail("image_size", f"does not fit images of side {native}", f"use a size near {native}")


def _cosine_momentum(base: float, step, total_steps: int):
    """MoCo v3 / BYOL momentum: from ``base`` at step 0 to 1 at the end, cosine."""
    progress = jnp.minimum(step / max(total_steps, 1), 1.0)
    return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


class Trainer:
    """Everything static about a run: networks, optimizer, schedules and the step.

    Args:
      config: the training config (see ``jaxcl.config.default_config``).
      mesh: the data mesh (default: all devices).
    """

    def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh | None = None):
        from jaxcl import data

        self.config = config
        self.mesh = mesh if mesh is not None else distributed.data_mesh()
        validate_config(config, num_devices=self.mesh.size)
        self.method = get_method(config.method)
        self.info = data.dataset_info(config.dataset, _options(config.dataset_options))
        self.num_classes = self.info.num_classes
        self.in_channels = self.info.image_shape[-1]
        self.steps_per_epoch = data.steps_per_epoch(
            config.dataset,
            config.train_split or None,
            config.global_batch_size,
            dataset_options=_options(config.dataset_options),
        )
        if config.num_steps > 0:
            self.total_steps = int(config.num_steps)
        else:
            self.total_steps = max(1, round(config.num_epochs * self.steps_per_epoch))
        peak = optim.scaled_learning_rate(
            config.learning_rate, config.global_batch_size, config.learning_rate_scaling
        )
        warmup_steps = round(config.warmup_epochs * self.steps_per_epoch)
        self.learning_rate = optim.learning_rate_schedule(peak, self.total_steps, warmup_steps)
        self.optimizer = optim.create_optimizer(
            config.optimizer,
            self.learning_rate,
            weight_decay=config.weight_decay,
            momentum=config.momentum,
            trust_coefficient=config.trust_coefficient,
        )
        self.compute_dtype = resolve_compute_dtype(config.compute_dtype)
        network = self._build_network(online=True, seed=config.seed)
        self.graphdef, self._initial_params, self._initial_batch_stats = functional.split(network)
        self.momentum_graphdef = None
        if self.method.uses_momentum_encoder:
            momentum_network = self._build_network(online=False, seed=config.seed)
            self.momentum_graphdef = functional.split(momentum_network)[0]
        self.trace_count = 0
        self.train_step = jax.jit(self._train_step, donate_argnums=0)

    def _build_network(self, *, online: bool, seed: int):
        return build_network(
            self.config,
            num_classes=self.num_classes,
            in_channels=self.in_channels,
            bn_axis_name=DATA_AXIS,
            rngs=nnx.Rngs(seed),
            online=online,
        )

    # ----------------------------------------------------------------- state

    def initial_state(self) -> TrainState:
        """A fresh train state, replicated on the mesh."""
        params, batch_stats = self._initial_params, self._initial_batch_stats
        state = {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "batch_stats": batch_stats,
            "opt_state": self.optimizer.init(params),
            "rng": jax.random.key_data(jax.random.key(self.config.seed)),
        }
        if self.method.uses_momentum_encoder:
            # The momentum encoder starts as a copy of the online encoder and projector.
            state["momentum_params"] = {k: params[k] for k in ("encoder", "projector")}
            state["momentum_batch_stats"] = {
                k: batch_stats[k] for k in ("encoder", "projector") if k in batch_stats
            }
        if self.method.init_extras is not None:
            extras_rng = jax.random.fold_in(jax.random.key(self.config.seed), 1)
            state["extras"] = self.method.init_extras(self.config, extras_rng)
        state = jax.tree.map(jnp.array, state)  # fresh buffers: the step donates them
        return distributed.replicate(state, self.mesh)

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of the train state, for restoring checkpoints."""
        replicated = jax.sharding.NamedSharding(self.mesh, P())
        return abstract_like(jax.eval_shape(self.initial_state), replicated)

    # ------------------------------------------------------------------ step

    def _per_device_step(self, params, batch_stats, momentum, extras, step, views, labels):
        """Gradients and new statistics of one device's slice of the batch."""
        self.trace_count += 1
        config, method = self.config, self.method
        local_batch, num_views = views.shape[:2]
        # All views go through the network in one pass, so BatchNorm normalises
        # over every view of the (global) batch, as SimCLR's global BN does.
        images = jnp.swapaxes(views, 0, 1).reshape((-1, *views.shape[2:]))
        images = images.astype(self.compute_dtype)

        def by_example(x):  # (views * n, d) -> (n, views, d)
            return jnp.swapaxes(x.reshape((num_views, local_batch, *x.shape[1:])), 0, 1)

        momentum_projections, new_momentum_stats = None, None
        if method.uses_momentum_encoder:
            outputs, new_momentum_stats = functional.apply(
                self.momentum_graphdef,
                momentum["params"],
                momentum["batch_stats"],
                images,
                train=True,
            )
            # The momentum encoder is a target, never trained by the loss.
            momentum_projections = jax.lax.stop_gradient(by_example(outputs["projections"]))

        def loss_fn(params):
            outputs, new_batch_stats = functional.apply(
                self.graphdef, params, batch_stats, images, train=True
            )
            embeddings = Embeddings(
                projections=by_example(outputs["projections"]),
                predictions=by_example(outputs["predictions"])
                if "predictions" in outputs
                else None,
                momentum_projections=momentum_projections,
            )
            loss, new_extras, metrics = method.loss(embeddings, labels, extras, config, DATA_AXIS)
            # Online probe on the first view; label -1 marks unlabelled examples.
            probe_logits = outputs["probe_logits"][:local_batch]
            labelled = (labels >= 0).astype(jnp.float32)
            cross_entropy = optax.softmax_cross_entropy_with_integer_labels(
                probe_logits, jnp.maximum(labels, 0)
            )
            correct = (jnp.argmax(probe_logits, axis=1) == labels).astype(jnp.float32)
            count = jnp.maximum(jax.lax.psum(jnp.sum(labelled), DATA_AXIS), 1.0)
            probe_loss = jax.lax.psum(jnp.sum(cross_entropy * labelled), DATA_AXIS) / count
            probe_top1 = jax.lax.psum(jnp.sum(correct * labelled), DATA_AXIS) / count
            metrics = {
                **metrics,
                **monitoring_metrics(embeddings.projections, DATA_AXIS),
                "loss": loss,
                "probe_loss": probe_loss,
                "probe_top1": probe_top1,
            }
            total = loss + config.probe_weight * probe_loss
            return total, (new_batch_stats, new_extras, metrics)

        grads, (new_batch_stats, new_extras, metrics) = jax.grad(loss_fn, has_aux=True)(params)
        return grads, new_batch_stats, new_momentum_stats, new_extras, metrics

    def _train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        momentum = {}
        if self.method.uses_momentum_encoder:
            momentum = {
                "params": state["momentum_params"],
                "batch_stats": state["momentum_batch_stats"],
            }
        extras = state.get("extras", {})
        sharded = jax.shard_map(
            self._per_device_step,
            mesh=self.mesh,
            in_specs=(P(), P(), P(), P(), P(), P(DATA_AXIS), P(DATA_AXIS)),
            out_specs=P(),
        )
        grads, batch_stats, momentum_stats, extras, metrics = sharded(
            state["params"],
            state["batch_stats"],
            momentum,
            extras,
            state["step"],
            batch["views"],
            batch["label"],
        )
        updates, opt_state = self.optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new_state = {
            **state,
            "step": state["step"] + 1,
            "params": params,
            "batch_stats": batch_stats,
            "opt_state": opt_state,
        }
        if self.method.uses_momentum_encoder:
            decay = self.config.momentum_encoder_decay
            if self.method.momentum_schedule == "cosine":
                decay = _cosine_momentum(decay, state["step"], self.total_steps)
            new_state["momentum_params"] = jax.tree.map(
                lambda target, online: decay * target + (1.0 - decay) * online,
                state["momentum_params"],
                {k: params[k] for k in state["momentum_params"]},
            )
            new_state["momentum_batch_stats"] = momentum_stats
            metrics["momentum_decay"] = jnp.asarray(decay, jnp.float32)
        if "extras" in state:
            new_state["extras"] = extras
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(optax.tree.norm(grads))
        if self.config.nonfinite_loss == "skip":
            # Keep everything but the step counter when this step went non-finite.
            kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
            new_state = {**kept, "step": state["step"] + 1}
        metrics.update(
            learning_rate=self.learning_rate(state["step"]),
            grad_norm=optax.tree.norm(grads),
            param_norm=optax.tree.norm(params),
            finite=finite.astype(jnp.float32),
        )
        return new_state, metrics

    # -------------------------------------------------------------- features

    def encoder_fn(self, state: TrainState):
        """A function from images to encoder features in evaluation mode (jitted once)."""
        params, batch_stats = state["params"], state["batch_stats"]
        return lambda images: self._encode(params, batch_stats, images)

    @functools.cached_property
    def _encode(self):
        graphdef, dtype = self.graphdef, self.compute_dtype

        @jax.jit
        def encode(params, batch_stats, images):
            network = nnx.merge(graphdef, params, batch_stats)
            # Running statistics: evaluation never touches the batch axis.
            network = nnx.view(network, use_running_average=True, raise_if_not_found=False)
            return network.encoder(images.astype(dtype)).astype(jnp.float32)

        return encode


# ---------------------------------------------------------------------- loop


class _StopRequested:
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps."""

    def __init__(self):
        self.signal_number = None
        self._previous = {}

    def __enter__(self):
        for number in (signal.SIGTERM, signal.SIGINT):
            # Outside the main thread signals cannot be caught: leave them alone.
            with contextlib.suppress(ValueError):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame):
        self.signal_number = number

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def __bool__(self):
        return self.signal_number is not None


def _write_json(path: str, payload: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes ``workdir/config.json`` (read back by ``jaxcl.eval`` and ``load_encoder``)."""
    _write_json(os.path.join(workdir, "config.json"), config.to_dict())


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in ``workdir`` was trained with."""
    from jaxcl.config import default_config

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path} does not exist; pass the --workdir of a jaxcl training run."
        )
    with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    config = default_config()
    config.unlock()
    # Top-level assignment replaces whole sub-dicts such as dataset_options,
    # whose keys the defaults do not list; keys added since the run keep defaults.
    for key, value in saved.items():
        config[key] = value
    config.lock()
    return config


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.1)


def restore_or_initialize(trainer: Trainer, checkpointer: Checkpointer) -> TrainState:
    """The latest readable checkpoint's state, or a fresh one."""
    step, state = checkpointer.restore(trainer.abstract_state())
    if state is None:
        return trainer.initial_state()
    logging.info("resuming from checkpoint at step %d", step)
    return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains ``config.method`` and evaluates the encoder; resumes if ``workdir`` has a run.

    The entry point of the CLI (``python -m jaxcl.main``) and of notebooks.
    Running it again on the same ``workdir`` continues from the newest
    checkpoint and yields the same parameters as an uninterrupted run: the
    input pipeline's position is the step, and its randomness is a function of
    (seed, example, epoch).

    Args:
      config: a training config (``configs/*.py`` or ``jaxcl.config.default_config``).
      workdir: directory for checkpoints, metrics, plots and results.

    Returns:
      The final metrics, plus the evaluation results when ``config.eval.run_at_end``.
    """
    from jaxcl import data
    from jaxcl.metrics import MetricsWriter

    os.makedirs(workdir, exist_ok=True)
    trainer = Trainer(config)
    mesh = trainer.mesh
    main = distributed.is_main_process()
    if main:
        save_config(config, workdir)
    checkpointer = Checkpointer(workdir, max_to_keep=config.max_checkpoints_to_keep)
    state = restore_or_initialize(trainer, checkpointer)
    start_step = int(state["step"])
    total_steps = trainer.total_steps
    writer = MetricsWriter(workdir) if main else None
    summary: dict[str, float] = {}

    iterator = data.make_train_iterator(
        config.dataset,
        split=config.train_split or None,
        preset=config.augmentation,
        global_batch_size=config.global_batch_size,
        image_size=config.image_size,
        num_views=config.num_views,
        seed=config.seed,
        start_step=start_step,
        data_dir=config.data_dir or None,
        dataset_options=_options(config.dataset_options),
        augment_options=_options(config.augment_options),
    )
    batches = distributed.prefetch_to_mesh(iterator, mesh, keys=("views", "label"))
    knn_monitor = _KnnMonitor(trainer) if config.knn_every_steps > 0 else None

    step = start_step
    window_start, window_steps, input_wait = time.perf_counter(), 0, 0.0
    with (
        jax.set_mesh(mesh),
        _StopRequested() as stop,
        _progress_bar(total_steps, start_step, main and config.progress_bar) as bar,
    ):
        while step < total_steps:
            wait_start = time.perf_counter()
            batch = next(batches)
            input_wait += time.perf_counter() - wait_start
            state, metrics = trainer.train_step(state, batch)
            step += 1
            window_steps += 1
            if bar is not None:
                bar.update(1)
            last = step == total_steps
            if step % config.log_every_steps == 0 or last or stop:
                metrics = jax.device_get(metrics)
                elapsed = time.perf_counter() - window_start
                summary = {name: float(value) for name, value in metrics.items()}
                summary["step_time"] = elapsed / window_steps
                summary["images_per_sec"] = config.global_batch_size * window_steps / elapsed
                summary["input_wait_fraction"] = input_wait / elapsed
                if not summary["finite"] and config.nonfinite_loss == "raise":
                    checkpointer.close()
                    raise NonFiniteLossError(
                        f"non-finite loss or gradient at step {step} (loss={summary['loss']}); "
                        f"the last good checkpoint in {checkpointer.directory} is kept; lower "
                        "learning_rate or set config.nonfinite_loss='skip'."
                    )
                if knn_monitor is not None and (step % config.knn_every_steps == 0 or last):
                    summary["knn_top1"] = knn_monitor(state)
                if writer is not None:
                    writer.write(step, summary)
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{summary['loss']:.4f}",
                        probe=f"{summary['probe_top1']:.3f}",
                        img_s=f"{summary['images_per_sec']:.0f}",
                    )
                window_start, window_steps, input_wait = time.perf_counter(), 0, 0.0
            if step % config.checkpoint_every_steps == 0 or last or stop:
                checkpointer.save(step, state)
            if stop:
                logging.warning("signal %d: saved step %d, exiting", stop.signal_number, step)
                break
    checkpointer.close()
    if writer is not None:
        writer.close()
    if stop:
        raise SystemExit(128 + stop.signal_number)
    results = dict(summary)
    if config.eval.run_at_end:
        from jaxcl.eval import evaluate_state

        results.update(evaluate_state(trainer, state, workdir))
    return results


class _KnnMonitor:
    """Weighted kNN accuracy on a fixed subset, run every ``knn_every_steps``."""

    def __init__(self, trainer: Trainer):
        from jaxcl import data

        config = trainer.config
        self.trainer = trainer
        common = {
            "image_size": config.image_size,
            "data_dir": config.data_dir or None,
            "dataset_options": _options(config.dataset_options),
        }
        self.train_images, self.train_labels = data.make_eval_arrays(
            config.dataset,
            split=config.eval_train_split,
            max_examples=config.knn_train_examples,
            **common,
        )
        self.test_images, self.test_labels = data.make_eval_arrays(
            config.dataset,
            split=config.eval_test_split,
            max_examples=max(1000, config.knn_train_examples // 5),
            **common,
        )

    def __call__(self, state: TrainState) -> float:
        from jaxcl import evaluate

        config = self.trainer.config
        encode = self.trainer.encoder_fn(state)
        batch = config.eval.feature_batch_size
        train = evaluate.extract_features(encode, self.train_images, batch_size=batch)
        test = evaluate.extract_features(encode, self.test_images, batch_size=batch)
        return evaluate.knn_accuracy(
            train,
            self.train_labels,
            test,
            self.test_labels,
            num_classes=self.trainer.num_classes,
            k=config.knn_k,
            temperature=config.knn_temperature,
        )
