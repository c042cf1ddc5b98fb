"""The trainer and the training loop, for every method.

Read top to bottom: the ``Trainer`` (networks, optimizer, the train state and
the jitted step), then ``train``, the loop that feeds it, logs and checkpoints.
Evaluation is not here: ``jaxcl.run.train_and_evaluate`` composes the two.

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

import functools
import logging
import signal
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcl import console, data, distributed, optim, weights, workdir_identity, workdir_io
from jaxcl.checkpoint import Checkpointer, abstract_like
from jaxcl.config import load_config, validate_config
from jaxcl.console import StepProgress
from jaxcl.contrastive_network import build_network, online_probe_metrics, resolve_compute_dtype
from jaxcl.distributed import DATA_AXIS
from jaxcl.methods import Embeddings, get_method
from jaxcl.methods.base import monitoring_metrics
from jaxcl.metric_writer import MetricsWriter, last_logged, truncate_metrics
from jaxcl.models import functional
from jaxcl.stopping import (
    NonfiniteMonitor,
    StopRequested,
    stop_agreed,
)

__all__ = ["TrainResult", "Trainer", "restore_or_initialize", "train", "train_batches"]

TrainState = dict[str, Any]
_QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
LogHook = Callable[[int, TrainState, bool], dict[str, float]]


class Trainer:
    """Everything static about a run: networks, optimizer, schedules and the step.

    Constructing one validates the config and builds only structures (shapes and
    dtypes, via ``nnx.eval_shape``); the parameters are created by the jitted
    ``initial_state``, directly with the mesh's replicated sharding.

    Args:
      config: the training config (see ``jaxcl.config.default_config``).
      mesh: the data mesh (default: all devices).
      check_data_files: check that the dataset is on disk (False: encoder only).
    """

    def __init__(self, config, mesh=None, *, check_data_files: bool = True):
        self.config = config
        self.mesh = mesh if mesh is not None else distributed.data_mesh()
        validate_config(config, num_devices=self.mesh.size, check_data_files=check_data_files)
        self.method = get_method(config.method)
        self.settings = config[self.method.name]
        self.data = data.DataSpec.from_config(config)
        self.view_configs = self.data.view_configs()
        self.num_classes, self.in_channels = (
            self.data.info.num_classes,
            self.data.info.image_shape[-1],
        )
        self.steps_per_epoch = self.data.steps_per_epoch()
        epochs_in_steps = max(1, round(config.num_epochs * self.steps_per_epoch))
        self.total_steps = int(config.num_steps) if config.num_steps > 0 else epochs_in_steps
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
            decay=config.weight_decay_on,
        )
        self.compute_dtype = resolve_compute_dtype(config.compute_dtype)
        # Structures only: nnx.eval_shape creates no parameter.
        self.graphdef = functional.split(nnx.eval_shape(lambda: self._network(online=True)))[0]
        self.momentum_graphdef = None
        if self.method.uses_momentum_encoder:
            momentum_network = nnx.eval_shape(lambda: self._network(online=False))
            self.momentum_graphdef = functional.split(momentum_network)[0]
        self.replicated = NamedSharding(self.mesh, P())
        self.train_step = jax.jit(
            self._train_step, donate_argnums=0, out_shardings=(self.replicated, self.replicated)
        )

    def _network(self, *, online: bool):
        return build_network(
            self.config,
            self.method,
            num_classes=self.num_classes,
            in_channels=self.in_channels,
            bn_axis_name=DATA_AXIS,
            rngs=nnx.Rngs(self.config.seed),
            online=online,
        )

    # ----------------------------------------------------------------- state

    def _init_state(self) -> TrainState:
        """A fresh train state: the function ``initial_state`` compiles."""
        _, params, batch_stats = functional.split(self._network(online=True))
        state = {
            "step": jnp.zeros((), jnp.int32),
            "params": params,
            "batch_stats": batch_stats,
            "opt_state": self.optimizer.init(params),
        }
        if self.method.uses_momentum_encoder:
            # The momentum encoder starts as a copy of the online encoder and projector.
            state["momentum_params"] = {k: params[k] for k in ("encoder", "projector")}
            state["momentum_batch_stats"] = {
                k: batch_stats[k] for k in ("encoder", "projector") if k in batch_stats
            }
        if self.method.init_extras is not None:
            extras_rng = jax.random.fold_in(jax.random.key(self.config.seed), 1)
            state["extras"] = self.method.init_extras(self.settings, self.config, extras_rng)
        return state

    @functools.cached_property
    def _compiled_init(self):
        # It runs once, so XLA's expensive passes (off, as with jax_disable_most_
        # optimizations) only cost time: 1.7 s, not 13 s, for the tiny test network.
        lowered = jax.jit(self._init_state, out_shardings=self.replicated).lower()
        return lowered.compile(compiler_options=_QUICK_COMPILE)

    def initial_state(self) -> TrainState:
        """A fresh train state, created by one jitted program already replicated on the mesh."""
        return self._compiled_init()

    def with_encoder_from(self, state: TrainState, source: str) -> TrainState:
        """``state`` with its encoder (and momentum encoder) set from ``source``.

        Args:
          state: a fresh train state (``initial_state``).
          source: ``config.init_from``: the workdir of a jaxcl run (its newest
            checkpoint), a PyTorch file of a torchvision ResNet or timm ViT
            (read with ``jaxcl.weights.import_torch``), or a SimCLR TensorFlow
            checkpoint (``jaxcl.weights.import_simclr_tf``).

        Returns:
          The state with the imported encoder arrays, replicated on the mesh; the
          heads, the optimizer state and the step stay as they were.

        Raises:
          jaxcl.weights.WeightsError: the source's encoder is not this config's.
        """
        params, batch_stats = self._encoder_arrays_from(source)
        expected = (state["params"]["encoder"], state["batch_stats"].get("encoder", {}))
        weights.check_same_encoder(
            f"init_from={source!r}",
            (params, batch_stats),
            expected,
            self.config.model,
            self.config.model_options,
        )
        params, batch_stats = jax.device_put((params, batch_stats), self.replicated)
        state = {**state, "params": {**state["params"], "encoder": params}}
        if batch_stats:
            state["batch_stats"] = {**state["batch_stats"], "encoder": batch_stats}
        if self.method.uses_momentum_encoder:
            state["momentum_params"] = {**state["momentum_params"], "encoder": params}
            if batch_stats:
                state["momentum_batch_stats"] = {
                    **state["momentum_batch_stats"],
                    "encoder": batch_stats,
                }
        return state

    def _encoder_arrays_from(self, source: str) -> tuple[dict, dict]:
        """The encoder's (params, batch_stats) in a jaxcl workdir, a PyTorch file or a TF one."""
        if workdir_io.resolve(source).joinpath("config.json").exists():
            other = Trainer(load_config(source), self.mesh, check_data_files=False)
            checkpointer = Checkpointer(source)
            try:
                _, restored = checkpointer.restore(other.abstract_state())
            finally:
                checkpointer.close()
            if restored is None:
                raise FileNotFoundError(f"init_from={source!r} holds no checkpoint yet")
            return restored["params"]["encoder"], restored["batch_stats"].get("encoder", {})
        options = {
            **dict(self.config.model_options),
            "in_channels": self.in_channels,
            "dtype": self.compute_dtype,
        }
        encoder = weights.import_encoder_file(source, self.config.model, **options)
        _, params, batch_stats = functional.split(encoder)
        return params, batch_stats

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of the train state, for restoring checkpoints."""
        return abstract_like(jax.eval_shape(self._init_state), self.replicated)

    # ------------------------------------------------------------------ step

    def _per_device_step(
        self, params, batch_stats, momentum, extras, step, views, labels, view_keys
    ):
        """Gradients and new statistics of one device's slice of the batch."""
        config, method = self.config, self.method
        local_batch, num_views = views.shape[:2]
        if self.data.augment_on_device:
            # The photometric half of each view, per example; its keys came
            # with the batch, so this is the same on any number of devices.
            views = data.finish_views(views, view_keys, self.view_configs)
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
            predictions = outputs.get("predictions")
            embeddings = Embeddings(
                projections=by_example(outputs["projections"]),
                predictions=None if predictions is None else by_example(predictions),
                momentum_projections=momentum_projections,
            )
            loss, new_extras, metrics = method.loss(
                embeddings, labels, extras, self.settings, DATA_AXIS, step
            )
            # The online probe sees the first view only.
            probe_loss, probe_top1 = online_probe_metrics(
                outputs["probe_logits"][:local_batch], labels, DATA_AXIS
            )
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
        size, channels = config.image_size, self.in_channels
        chex.assert_shape(batch["views"], (None, config.num_views, size, size, channels))
        chex.assert_shape(batch["label"], (batch["views"].shape[0],))
        chex.assert_type(batch["label"], int)
        view_keys = None
        if self.data.augment_on_device:
            if "view_keys" not in batch:
                raise ValueError(
                    "this trainer augments on the device, but the batch has no 'view_keys'; "
                    "make it with trainer.data.train_iterator() or set "
                    "config.augment_on_device='false'."
                )
            view_keys = batch["view_keys"]
        momentum = {}
        if self.method.uses_momentum_encoder:
            momentum = {"params": state["momentum_params"]}
            momentum["batch_stats"] = state["momentum_batch_stats"]
        sharded = jax.shard_map(
            self._per_device_step,
            mesh=self.mesh,
            in_specs=(P(), P(), P(), P(), P(), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS)),
            out_specs=P(),
        )
        grads, batch_stats, momentum_stats, extras, metrics = sharded(
            state["params"],
            state["batch_stats"],
            momentum,
            state.get("extras", {}),
            state["step"],
            batch["views"],
            batch["label"],
            view_keys,
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
            decay = self.method.momentum_decay(self.settings, state["step"], self.total_steps)
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
        if config.nonfinite_loss == "skip":
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

    @staticmethod
    def encoder_variables(state: TrainState) -> dict:
        """The encoder's part of a train state: the variables of ``feature_fn``."""
        return {"params": state["params"], "batch_stats": state["batch_stats"]}

    @functools.cached_property
    def feature_fn(self) -> Callable[[dict, jax.Array], jax.Array]:
        """``(variables, images) -> features``: the encoder in evaluation mode, pure.

        Variables (``encoder_variables``) are an argument, not constants, so one
        compiled program serves every checkpoint (``jaxcl.features``).
        """
        graphdef, dtype = self.graphdef, self.compute_dtype

        def features(variables, images):
            network = nnx.merge(graphdef, variables["params"], variables["batch_stats"])
            # Running statistics: evaluation never touches the batch axis.
            network = nnx.view(
                network, use_running_average=True, deterministic=True, raise_if_not_found=False
            )
            return network.encoder(images.astype(dtype)).astype(jnp.float32)

        return features


def restore_or_initialize(trainer: Trainer, checkpointer: Checkpointer) -> TrainState:
    """The latest readable checkpoint's state, or a fresh one.

    Unreadable checkpoints newer than the one restored are reported and set
    aside (see ``Checkpointer.restore``); when checkpoints exist but none is
    readable this raises rather than start afresh over them. A fresh state
    takes its encoder from ``config.init_from`` when that is set (a resumed
    run keeps its own).
    """
    step, state = checkpointer.restore(trainer.abstract_state(), set_aside_unreadable=True)
    if state is None:
        state = trainer.initial_state()
        if trainer.config.init_from:
            state = trainer.with_encoder_from(state, trainer.config.init_from)
            if jax.process_index() == 0:
                console.say("encoder initialised from %s", trainer.config.init_from)
        return state
    if jax.process_index() == 0:
        console.say("resuming from checkpoint at step %d", step)
    return state


def train_batches(trainer: Trainer, start_step: int = 0):
    """The training batches of a run from ``start_step`` on, prefetched onto its mesh.

    Args:
      trainer: the run's trainer (its data and mesh).
      start_step: the step to resume from (the pipeline is a function of the step).

    Returns:
      An iterator of ``{'views', 'label'}`` global arrays sharded over 'data'
      (and ``'view_keys'`` with ``augment_on_device``, and the trainer's
      ``extra_batch_keys`` if it has them); ``close()`` it to stop its
      prefetch thread.
    """
    iterator = trainer.data.train_iterator(start_step)
    keys = ("views", "label", "view_keys") if trainer.data.augment_on_device else ("views", "label")
    # The examples' dataset indices, for a step whose randomness is per example
    # (fine-tuning's drop-path).
    keys += tuple(getattr(trainer, "extra_batch_keys", ()))
    return distributed.prefetch_to_mesh(iterator, trainer.mesh, keys=keys)


class TrainResult(NamedTuple):
    """What ``train`` returns: the final state and the last logged metrics."""

    state: TrainState
    summary: dict[str, float]


def train(
    trainer: Trainer, workdir: str, *, on_log: LogHook | None = None, fork: bool = False
) -> TrainResult:
    """Trains ``trainer``'s config in ``workdir``, resuming from its newest checkpoint.

    Running it again on the same ``workdir`` (and config) continues from the
    newest checkpoint and yields the same parameters as an uninterrupted run:
    the input pipeline's position is the step, and its randomness a function of
    (seed, example, epoch). SIGTERM or SIGINT saves the step and exits 128 + signal.

    Args:
      trainer: ``Trainer(config)`` of the run (constructing it validated the config).
      workdir: directory for checkpoints, metrics and the run's ``config.json``.
      on_log: called at each log step with ``(step, state, is_last)``; the
        metrics it returns are logged with the step's (the kNN monitor).
      fork: resume under a config of another run (``jaxcl.workdir_identity``).

    Returns:
      A ``TrainResult`` with the final state and the last logged metrics.
    """
    config = trainer.config
    main = distributed.is_main_process()
    # Before any write, on every process: the workdir's own run, and writable.
    differences = workdir_identity.check_rerun(config, workdir, fork=fork)
    workdir_io.check_writable(workdir)
    if main:
        workdir_identity.store_config(config, workdir, forked=fork and bool(differences))
    console.open_log_file()  # accepted: from here on the workdir may get its log
    checkpointer = Checkpointer(
        workdir, max_to_keep=config.max_checkpoints_to_keep, cleanup_tmp=True
    )
    state = restore_or_initialize(trainer, checkpointer)
    start_step, total_steps = int(state["step"]), trainer.total_steps
    if main:
        # A run killed after its last checkpoint logged steps that it now redoes.
        truncate_metrics(workdir, start_step)
    writer = (
        MetricsWriter(workdir, purge_step=start_step + 1 if start_step else None) if main else None
    )
    summary: dict[str, float] = {}
    batches = train_batches(trainer, start_step)
    step, stopping = start_step, False
    skipped_before = last_logged(workdir, "skipped_steps") if main and start_step else 0
    nonfinite = NonfiniteMonitor(int(skipped_before))
    window_start, window_steps, input_wait = time.perf_counter(), 0, 0.0
    try:
        with (
            jax.set_mesh(trainer.mesh),
            StopRequested() as stop,
            StepProgress(total_steps, start_step, enabled=main and config.progress_bar) as bar,
        ):
            while step < total_steps:
                wait_start = time.perf_counter()
                batch = next(batches)
                input_wait += time.perf_counter() - wait_start
                state, metrics = trainer.train_step(state, batch)
                step += 1
                nonfinite.update(metrics["finite"], step)
                window_steps += 1
                bar.dispatched(metrics["loss"])
                last = step == total_steps
                log_now = step % config.log_every_steps == 0 or last
                save_now = step % config.checkpoint_every_steps == 0 or last
                stopping = stop_agreed(stop, sync_point=log_now or save_now)
                if log_now or save_now or stopping:
                    # Read before anything is written: no checkpoint may hold a
                    # diverged state, and the error names the first bad step.
                    bad_count = nonfinite.check(config, step, checkpointer)
                if log_now or stopping:
                    metrics = jax.device_get(metrics)
                    elapsed = time.perf_counter() - window_start
                    summary = {name: float(value) for name, value in metrics.items()}
                    summary["step_time"] = elapsed / window_steps
                    summary["images_per_sec"] = config.global_batch_size * window_steps / elapsed
                    summary["input_wait_fraction"] = input_wait / elapsed
                    summary["skipped_steps"] = bad_count
                    nonfinite.warn_if_new(bad_count, step)
                    if on_log is not None:
                        summary.update(on_log(step, state, last))
                    if writer is not None:
                        writer.write(step, summary)
                    # Pretraining shows its online probe, fine-tuning its training top-1.
                    top1 = {k: summary[k] for k in ("probe_top1", "train_top1") if k in summary}
                    bar.flush()
                    bar.show(
                        loss=f"{summary['loss']:.4f}", img_s=f"{summary['images_per_sec']:.0f}",
                        **{k.removesuffix("_top1"): f"{v:.3f}" for k, v in top1.items()},
                    )  # fmt: skip
                    window_start, window_steps, input_wait = time.perf_counter(), 0, 0.0
                if save_now or stopping:
                    checkpointer.save(step, state)
                    if main:
                        console.say("checkpoint: step %d -> %s", step, checkpointer.directory)
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
    return TrainResult(state, summary)
