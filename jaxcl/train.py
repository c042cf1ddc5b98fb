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
import difflib
import functools
import json
import logging
import os
import signal
import time
from typing import Any

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
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
    the fix: keys unknown to ``jaxcl.config.default_config`` (a locked config
    already refuses them; this catches configs built as plain dicts) or missing
    from it, names of methods, models, datasets, augmentations and optimizers,
    batch sizes that do not split over the devices, temperature, MoCo queue,
    crop size, augmentation options and dataset files that are not there.

    Args:
      config: the training config.
      num_devices: devices of the data mesh (all processes).
    """
    from jaxcl import data, models
    from jaxcl.config import default_config
    from jaxcl.methods import METHOD_NAMES

    def fail(key, problem, fix):
        raise ValueError(f"config.{key}={_plain(config[key])!r} {problem}; {fix}.")

    _check_keys(config, default_config())
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
    for key in ("log_every_steps", "checkpoint_every_steps", "max_checkpoints_to_keep"):
        if config[key] < 1:
            fail(key, "must be >= 1", f"set config.{key} to a positive number of steps")
    try:
        info = data.dataset_info(config.dataset, _options(config.dataset_options))
    except ValueError as error:
        fail("dataset_options", f"is invalid ({error})", "pass only the options listed")
    # The random crop is resized to image_size: a larger size only upsamples
    # (ImageNet's images vary in size, so there is nothing to compare with).
    native = min(info.image_shape[:2]) if info.image_shape[0] is not None else None
    if config.image_size <= 0 or (native is not None and config.image_size > native):
        fail(
            "image_size",
            f"does not fit the {config.dataset} images of side {native}",
            f"use an image_size between 1 and {native}",
        )
    try:
        data.get_preset(config.augmentation, **_options(config.augment_options))
    except (ValueError, TypeError) as error:
        fail("augment_options", f"is invalid ({error})", "see jaxcl.data.AugmentConfig")
    _check_dataset_files(config)


# Sub-configs whose keys belong to the dataset, augmentation or model chosen;
# dataset_info, get_preset and the model registry check them.
_FREE_FORM_KEYS = ("dataset_options", "augment_options", "model_options")


def _plain(value):
    """A config value as plain Python, whose repr fits on one line."""
    return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value


def _check_keys(config, defaults, prefix: str = "") -> None:
    """Raises for keys of ``config`` that ``defaults`` lacks and the reverse."""
    for key in config:
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults.keys()), n=1)
            fix = f"did you mean config.{prefix}{close[0]}?" if close else "remove it."
            raise ValueError(
                f"config.{prefix}{key}={_plain(config[key])!r} is not a jaxcl config key; {fix}"
            )
        if key not in _FREE_FORM_KEYS and isinstance(defaults[key], ml_collections.ConfigDict):
            _check_keys(config[key], defaults[key], f"{prefix}{key}.")
    for key in defaults:
        if key not in config:
            raise ValueError(
                f"config.{prefix}{key} is missing; build configs from "
                f"jaxcl.config.default_config() (its value there: {_plain(defaults[key])!r})."
            )


def _check_dataset_files(config) -> None:
    """Raises when the files a dataset is read from are known to be missing.

    Only what can be known without a download: an explicit Fashion-MNIST
    ``source_dir``, and ImageNet, which TFDS cannot download.
    """
    options = _options(config.dataset_options)
    if config.dataset == "fashion_mnist" and "source_dir" in options:
        from jaxcl.data import fashion_mnist_debian

        if not fashion_mnist_debian.source_files_exist(options["source_dir"]):
            raise ValueError(
                f"config.dataset_options.source_dir={options['source_dir']!r} holds no "
                "Fashion-MNIST IDX files (train-images-idx3-ubyte.gz ...); run "
                f"{fashion_mnist_debian.INSTALL_HINT} and drop the option, or point it "
                "at the directory of the four files."
            )
    if config.dataset == "imagenet2012":
        import tensorflow_datasets as tfds

        builder = tfds.builder("imagenet2012", data_dir=config.data_dir or None)
        manual_dir = options.get("manual_dir", "")
        tars = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
        has_tars = manual_dir and all(
            os.path.isfile(os.path.join(manual_dir, name)) for name in tars
        )
        if not builder.is_prepared() and not has_tars:
            raise ValueError(
                f"config.dataset_options.manual_dir={manual_dir!r} does not hold "
                f"{' and '.join(tars)} and imagenet2012 is not prepared in "
                f"config.data_dir={config.data_dir!r}; download the two tar files from "
                "image-net.org and set dataset_options.manual_dir to their directory."
            )


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
        config = self.config
        # Checked while tracing, so free at run time: a batch from another
        # pipeline or a notebook fails here, with its shapes, not inside shard_map.
        chex.assert_shape(
            batch["views"],
            (None, config.num_views, config.image_size, config.image_size, self.in_channels),
        )
        chex.assert_shape(batch["label"], (batch["views"].shape[0],))
        chex.assert_type(batch["label"], int)
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
        grad_norm, param_norm = optax.tree.norm(grads), optax.tree.norm(params)
        # The parameters too: a finite gradient can still overflow in the update.
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm) & jnp.isfinite(param_norm)
        if self.config.nonfinite_loss == "skip":
            # Keep everything but the step counter when this step went non-finite.
            kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
            new_state = {**kept, "step": state["step"] + 1}
        metrics.update(
            learning_rate=self.learning_rate(state["step"]),
            grad_norm=grad_norm,
            param_norm=param_norm,
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
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps.

    The loop then saves a checkpoint of the step just finished and exits with
    status 128 + the signal number. A second SIGINT (Ctrl-C again) gets Python's
    usual KeyboardInterrupt at once, for when the save itself is stuck; repeated
    SIGTERMs are ignored, because launchers often send one to each process of a
    job and to the job as a whole, and schedulers follow up with SIGKILL anyway.
    """

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
        # No logging here: the handler may interrupt the logging module itself.
        if self.signal_number is None:
            self.signal_number = number
        if signal.SIGINT in self._previous:
            signal.signal(signal.SIGINT, self._previous[signal.SIGINT])

    def __exit__(self, *exc):
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def __bool__(self):
        return self.signal_number is not None


def _stop_agreed(stop: _StopRequested, *, sync_point: bool) -> bool:
    """Whether the loop stops after this step.

    One process stops at the first step after a signal. Several processes must
    save the same step together, and a signal can reach them steps apart, so
    they agree (any one signalled) at log and checkpoint steps only, where the
    loop waits for the device anyway.
    """
    if jax.process_count() == 1:
        return bool(stop)
    if not sync_point:
        return False
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(bool(stop)))))


@jax.jit
def _fold_nonfinite(first_bad, bad_count, finite, step):
    bad = finite == 0
    first_bad = jnp.where(bad & (first_bad < 0), step, first_bad)
    return first_bad, bad_count + bad.astype(jnp.int32)


class _NonfiniteMonitor:
    """The first non-finite step and the count of them, kept on the device.

    Reading ``metrics['finite']`` on the host every step would make each step
    wait for the previous one to finish, losing the overlap of host and device
    work. Instead one tiny jitted call per step (dispatched asynchronously, no
    transfer back) folds the flag into two scalars, which the host reads only
    where it waits anyway or must: at log steps, before every checkpoint and on
    a signal. So 'raise' names the exact first bad step and never checkpoints a
    diverged state, at the cost of running on until the next such read.
    """

    def __init__(self):
        # Host values: jit places them wherever the flags are, on any mesh.
        self._first_bad, self._bad_count = np.int32(-1), np.int32(0)
        self._warned_count = 0

    def update(self, finite: jax.Array, step: int) -> None:
        """Folds in the ``finite`` flag of ``step`` (1-based, as in metrics)."""
        self._first_bad, self._bad_count = _fold_nonfinite(
            self._first_bad, self._bad_count, finite, step
        )

    def read(self) -> tuple[int | None, int]:
        """``(first non-finite step or None, number of non-finite steps)``; syncs."""
        first_bad, bad_count = (int(x) for x in jax.device_get((self._first_bad, self._bad_count)))
        return (first_bad if first_bad >= 0 else None), bad_count

    def warn_if_new(self, bad_count: int, step: int) -> None:
        """Logs skipped updates once per log step that saw new ones."""
        if bad_count > self._warned_count:
            logging.warning(
                "skipped %d non-finite update(s) up to step %d (%d in all)",
                bad_count - self._warned_count,
                step,
                bad_count,
            )
            self._warned_count = bad_count


def _kept(checkpointer: Checkpointer) -> str:
    """Which checkpoint a stopped run leaves to resume from, in words."""
    checkpointer.wait()
    latest = checkpointer.latest_step()
    if latest is None:
        return f"no checkpoint was written to {checkpointer.directory}"
    return f"kept the last good checkpoint, step {latest}, in {checkpointer.directory}"


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
    _merge_saved(config, saved)
    config.lock()
    return config


def _merge_saved(config: ml_collections.ConfigDict, saved: dict) -> None:
    # Structured sections (eval) merge key by key, so keys added to jaxcl since
    # the run keep their defaults; free-form option dicts (dataset_options),
    # empty in the defaults, are replaced whole.
    for key, value in saved.items():
        default = config.get(key)
        if isinstance(value, dict) and isinstance(default, ml_collections.ConfigDict) and default:
            _merge_saved(default, value)
        else:
            config[key] = value


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, smoothing=0.1)


def restore_or_initialize(trainer: Trainer, checkpointer: Checkpointer) -> TrainState:
    """The latest readable checkpoint's state, or a fresh one.

    Unreadable checkpoints newer than the one restored are reported and set
    aside (see ``Checkpointer.restore``); when checkpoints exist but none is
    readable this raises rather than start afresh over them.
    """
    step, state = checkpointer.restore(trainer.abstract_state(), set_aside_unreadable=True)
    if state is None:
        return trainer.initial_state()
    logging.info("resuming from checkpoint at step %d", step)
    return state


def train_batches(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, start_step: int = 0):
    """The training batches of ``config`` from ``start_step`` on, prefetched onto ``mesh``.

    Args:
      config: the training config.
      mesh: the data mesh.
      start_step: the step to resume from (the pipeline is a function of the step).

    Returns:
      An iterator of ``{'views', 'label'}`` global arrays sharded over 'data';
      ``close()`` it to stop its prefetch thread.
    """
    from jaxcl import data

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
    return distributed.prefetch_to_mesh(iterator, mesh, keys=("views", "label"))


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
    from jaxcl.metrics import MetricsWriter, truncate_metrics

    os.makedirs(workdir, exist_ok=True)
    trainer = Trainer(config)
    mesh = trainer.mesh
    main = distributed.is_main_process()
    if main:
        save_config(config, workdir)
    checkpointer = Checkpointer(
        workdir, max_to_keep=config.max_checkpoints_to_keep, cleanup_tmp=True
    )
    state = restore_or_initialize(trainer, checkpointer)
    start_step = int(state["step"])
    total_steps = trainer.total_steps
    if main:
        # A run killed after its last checkpoint logged steps that it now redoes.
        truncate_metrics(workdir, start_step)
    writer = (
        MetricsWriter(workdir, purge_step=start_step + 1 if start_step else None) if main else None
    )
    summary: dict[str, float] = {}

    batches = train_batches(config, mesh, start_step)
    knn_monitor = _KnnMonitor(trainer) if config.knn_every_steps > 0 else None

    step = start_step
    stopping = False
    nonfinite = _NonfiniteMonitor()
    window_start, window_steps, input_wait = time.perf_counter(), 0, 0.0
    try:
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
                nonfinite.update(metrics["finite"], step)
                window_steps += 1
                if bar is not None:
                    bar.update(1)
                last = step == total_steps
                log_now = step % config.log_every_steps == 0 or last
                save_now = step % config.checkpoint_every_steps == 0 or last
                stopping = _stop_agreed(stop, sync_point=log_now or save_now)
                if log_now or save_now or stopping:
                    # Read before anything is written: no checkpoint may hold a
                    # diverged state, and the error names the first bad step.
                    first_bad, bad_count = nonfinite.read()
                    if first_bad is not None and config.nonfinite_loss == "raise":
                        raise NonFiniteLossError(
                            f"non-finite loss, gradient or parameters at step {first_bad} "
                            f"(noticed at step {step}); {_kept(checkpointer)}; lower "
                            "config.learning_rate or set config.nonfinite_loss='skip'."
                        )
                if log_now or stopping:
                    metrics = jax.device_get(metrics)
                    elapsed = time.perf_counter() - window_start
                    summary = {name: float(value) for name, value in metrics.items()}
                    summary["step_time"] = elapsed / window_steps
                    summary["images_per_sec"] = config.global_batch_size * window_steps / elapsed
                    summary["input_wait_fraction"] = input_wait / elapsed
                    if config.nonfinite_loss == "skip":
                        summary["skipped_steps"] = bad_count
                        nonfinite.warn_if_new(bad_count, step)
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
                if save_now or stopping:
                    checkpointer.save(step, state)
                if stopping:
                    break
    finally:
        batches.close()  # ends the prefetch thread
        # On errors too: a save in flight completes, or the previous one stays latest.
        checkpointer.close()
        if writer is not None:
            writer.close()
    if stopping:
        # Several processes stop together, at the step of the first signal any got.
        number = stop.signal_number or signal.SIGTERM
        logging.warning("%s: saved step %d, exiting", signal.Signals(number).name, step)
        raise SystemExit(128 + number)
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
