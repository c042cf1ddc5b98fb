"""Linear evaluation on augmented images: SimCLR's and MoCo's ``main_lincls`` protocol.

The default probe (``jaxcl.probes.linear_evaluation``) fits a linear classifier
on cached features of un-augmented images: fast, and what small datasets need.
The protocol behind the published ImageNet numbers trains the linear head over
the frozen encoder on freshly augmented images at every step: a random resized
crop and a horizontal flip (the run's own crop and flip; no colour, blur or
solarization), for ``config.eval.linear_epochs`` epochs, then scores the
centre-cropped evaluation images. The head's input is standardized per feature
by the mean and standard deviation of the un-augmented training features, as in
the cached-feature probe. SimCLR (Chen et al. 2020, appendix B.5): SGD
with Nesterov momentum, rate 0.1 x B/256, 90 epochs, B 4096, no weight decay;
MoCo (He et al. 2020, ``main_lincls.py``): rate 30, B 256, 100 epochs. jaxcl
uses the same optimiser as its cached-feature probe: Nesterov momentum 0.9,
``linear_learning_rate x B / 256`` with cosine decay, L2 weight decay on the
weights, a zero-initialised head.

The encoder runs in evaluation mode (running BatchNorm statistics) and gets no
gradient. Batches are sharded over the data mesh like training; the head and
its optimiser state are replicated. With a workdir the head is checkpointed
under ``workdir/linear_eval/encoder_step_<step>`` every
``config.checkpoint_every_steps`` steps (at most once an epoch) and a rerun
resumes it: at ImageNet scale the protocol is 90 passes over 1.28M images
through the encoder, hours of a pod.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxcl import distributed
from jaxcl.checkpoint import Checkpointer, abstract_like
from jaxcl.run_probes import feature_batch_size, split_features

__all__ = ["CROP_AND_FLIP_ONLY", "augmented_linear_evaluation"]

# Augmentation overrides that leave the preset's random resized crop and flip.
CROP_AND_FLIP_ONLY = {
    "jitter_prob": 0.0,
    "grayscale_prob": 0.0,
    "blur_prob": 0.0,
    "solarize_prob": 0.0,
}
# Seed offset of the probe's data order and crops (training uses config.seed).
_SEED_OFFSET = 2
# Un-augmented training examples whose feature statistics scale the head's input.
_SCALING_EXAMPLES = 10_000


def _optimizer(learning_rate, batch_size, weight_decay, total_steps):
    schedule = optax.cosine_decay_schedule(
        learning_rate * batch_size / 256, decay_steps=max(1, total_steps)
    )
    return optax.chain(
        optax.add_decayed_weights(weight_decay, mask={"kernel": True, "bias": False}),
        optax.sgd(schedule, momentum=0.9, nesterov=True),
    )


def _logits(head, features):
    """The head on standardized features (the cached-feature probe's scaling)."""
    return (features - head["mean"]) / head["std"] @ head["kernel"] + head["bias"]


@functools.lru_cache(maxsize=8)
def _programs(feature_fn, mesh, dim, num_classes, hyperparameters):
    """The jitted initial state and train step (cached: one compile per run).

    ``hyperparameters``: (learning rate, batch size, weight decay, total steps).
    """
    replicated = NamedSharding(mesh, P())
    optimizer = _optimizer(*hyperparameters)

    @functools.partial(jax.jit, out_shardings=replicated)
    def initial(mean, std):
        weights = {"kernel": jnp.zeros((dim, num_classes)), "bias": jnp.zeros((num_classes,))}
        head = {**weights, "mean": mean, "std": std}
        return {"step": jnp.zeros((), jnp.int32), "head": head, "opt": optimizer.init(weights)}

    @functools.partial(jax.jit, donate_argnums=0, out_shardings=(replicated, replicated))
    def train_step(state, variables, views, labels):
        features = jax.lax.stop_gradient(feature_fn(variables, views[:, 0]))

        scaling = {"mean": state["head"]["mean"], "std": state["head"]["std"]}
        weights = {"kernel": state["head"]["kernel"], "bias": state["head"]["bias"]}

        def loss_fn(weights):
            logits = _logits({**weights, **scaling}, features)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, (logits.argmax(-1) == labels).mean()

        (loss, accuracy), grads = jax.value_and_grad(loss_fn, has_aux=True)(weights)
        updates, opt = optimizer.update(grads, state["opt"], weights)
        head = {**optax.apply_updates(weights, updates), **scaling}
        new_state = {"step": state["step"] + 1, "head": head, "opt": opt}
        return new_state, {"loss": loss, "accuracy": accuracy}

    return initial, train_step


def augmented_linear_evaluation(
    trainer,
    variables,
    *,
    workdir: str | None = None,
    encoder_step: int = 0,
    train=None,
    test=None,
) -> dict[str, float]:
    """Trains a linear head over the frozen encoder on augmented images; scores the test split.

    Args:
      trainer: the run's trainer (config, data, mesh, encoder).
      variables: the encoder's variables (``trainer.encoder_variables(state)``).
      workdir: checkpoint the head under
        ``workdir/linear_eval/encoder_step_<encoder_step>`` and resume it (None:
        no checkpoints).
      encoder_step: the training step of ``variables``: a head is only resumed
        over the encoder it was trained on.
      train: ``LabelledFeatures`` of un-augmented training images, whose
        per-feature mean and standard deviation standardize the head's input
        (as in the cached-feature probe); None to extract up to
        ``_SCALING_EXAMPLES`` of them here.
      test: ``LabelledFeatures`` of the test split if already extracted (the
        evaluation shares them with kNN); None to extract them here.

    Returns:
      ``{'linear_top1': test accuracy, 'linear_train_top1': accuracy on the
      augmented training batches of the last epoch}``.
    """
    config, spec, mesh = trainer.config, trainer.data, trainer.mesh
    batch_size = feature_batch_size(trainer, config.eval.linear_batch_size)
    split = spec.eval_train_split
    # The iterator counts the examples it reads (a catalog's count can differ:
    # a subset of ImageNet prepared from fewer archives, say).
    steps_per_epoch = spec.train_iterator(split=split, global_batch_size=batch_size).steps_per_epoch
    total_steps = config.eval.linear_epochs * steps_per_epoch
    image = jax.ShapeDtypeStruct(
        (1, config.image_size, config.image_size, trainer.in_channels), jnp.float32
    )
    dim = jax.eval_shape(trainer.feature_fn, variables, image).shape[-1]
    hyperparameters = (
        config.eval.linear_learning_rate, batch_size, config.eval.linear_weight_decay, total_steps
    )  # fmt: skip
    initial, train_step = _programs(
        trainer.feature_fn, mesh, dim, trainer.num_classes, hyperparameters
    )
    if train is None:
        train = split_features(trainer, variables, split, _SCALING_EXAMPLES)
    state = initial(train.features.mean(axis=0), train.features.std(axis=0) + 1e-6)
    checkpointer = None
    if workdir:
        head_dir = f"{workdir}/linear_eval/encoder_step_{encoder_step}"
        checkpointer = Checkpointer(head_dir, max_to_keep=1)
    try:
        if checkpointer is not None:
            replicated = NamedSharding(mesh, P())
            _, restored = checkpointer.restore(abstract_like(state, replicated))
            if restored is not None:
                state = restored
        state, train_top1 = _train(
            trainer, variables, state, train_step, checkpointer, batch_size, total_steps,
            steps_per_epoch,
        )  # fmt: skip
        if checkpointer is not None:
            checkpointer.save(total_steps, state)
    finally:
        if checkpointer is not None:
            checkpointer.close()
    if test is None:
        test = split_features(
            trainer, variables, spec.eval_test_split, config.eval.max_test_examples
        )
    head = jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data), state["head"])
    predictions = np.asarray(_logits(head, test.features)).argmax(-1)
    return {
        "linear_top1": float((predictions == test.labels).mean()),
        "linear_train_top1": train_top1,
    }


def _train(
    trainer, variables, state, train_step, checkpointer, batch_size, total_steps, steps_per_epoch
):
    """Runs the head's steps from ``state['step']`` to ``total_steps``.

    Returns the final state and the mean accuracy of the last epoch's batches
    (NaN if resumed after the last epoch began).
    """
    config, spec = trainer.config, trainer.data
    start = int(np.asarray(state["step"].addressable_shards[0].data))
    last_epoch_start = total_steps - steps_per_epoch
    accuracies = []
    # The run's checkpoint interval, but at most one save an epoch.
    every = max(config.checkpoint_every_steps, steps_per_epoch)
    if start < total_steps:
        iterator = spec.train_iterator(
            start,
            split=spec.eval_train_split,
            global_batch_size=batch_size,
            num_views=1,
            seed=config.seed + _SEED_OFFSET,
            augment_options={**spec.augment_options, **CROP_AND_FLIP_ONLY},
            augment_on_device=False,  # crops and flips only: all of it is host work
        )
        batches = distributed.prefetch_to_mesh(iterator, trainer.mesh, keys=("views", "label"))
        show = jax.process_index() == 0 and config.progress_bar
        try:
            progress = tqdm(
                range(start, total_steps), desc="linear head on augmented images",
                unit="step", disable=not show,
            )  # fmt: skip
            for step in progress:
                batch = next(batches)
                state, metrics = train_step(state, variables, batch["views"], batch["label"])
                if step >= last_epoch_start:
                    accuracies.append(metrics["accuracy"])
                done = step + 1
                if checkpointer is not None and done % every == 0:
                    checkpointer.save(done, state)
        finally:
            batches.close()
    if not accuracies:
        return state, float("nan")
    return state, float(np.mean([np.asarray(a.addressable_shards[0].data) for a in accuracies]))
