"""Transfer evaluation: a trained encoder's frozen features on another dataset.

``python -m jaxcl.eval --workdir=DIR --dataset=NAME`` restores the encoder of a
run (its own dataset need not be on this machine) and scores its features of
another dataset with the run's linear probe and weighted kNN, the protocol of
SimCLR's transfer table (Chen et al. 2020, section 6 and appendix B.8, there
with an L-BFGS probe). The other dataset's images are resized to the run's
evaluation side (``config.eval.image_size``, else ``config.image_size``) after
that dataset's own evaluation crop, and their channels are adapted to the
encoder's: RGB to grey by ITU-R 601 luma (as ``tf.image.rgb_to_grayscale``), grey
to RGB by repetition.

Results go to ``DIR/transfer/<dataset>/results.json``; the run's own files are
not touched.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import ml_collections

from jaxcl import data, workdir_io
from jaxcl.restore import restore_run
from jaxcl.run_probes import knn_top1, linear_probe, split_features

__all__ = ["adapt_channels", "evaluate_transfer", "transfer_results_path"]

_LUMA = (0.299, 0.587, 0.114)


class TransferError(ValueError):
    """A transfer evaluation that cannot run; the message names the value and the fix."""


def adapt_channels(images: jax.Array, channels: int) -> jax.Array:
    """Images (N, H, W, C) with ``channels`` channels: RGB to grey, grey to RGB, or as they are.

    Args:
      images: float images in [0, 1].
      channels: the encoder's input channels.

    Returns:
      (N, H, W, channels) images.

    Raises:
      TransferError: for any other pair of channel counts.
    """
    have = images.shape[-1]
    if have == channels:
        return images
    if have == 3 and channels == 1:
        return jnp.tensordot(images, jnp.asarray(_LUMA, images.dtype), axes=1)[..., None]
    if have == 1 and channels == 3:
        return jnp.repeat(images, 3, axis=-1)
    raise TransferError(
        f"cannot adapt {have}-channel images to an encoder of {channels} channels; "
        "use a dataset with 1 or 3 channels"
    )


def _target_config(config, dataset, dataset_options, data_dir, splits):
    """The run's config with the other dataset in place of its own."""
    target = ml_collections.ConfigDict(config.to_dict())
    target.dataset = dataset
    target.dataset_options = dict(dataset_options or {})
    target.data_dir = data_dir or ""
    target.train_split = ""
    target.eval_train_split, target.eval_test_split = splits
    return target


def _check_target(target) -> data.DatasetInfo:
    """The other dataset's info, after one-line checks of its name, options and splits."""
    try:
        data.check_dataset_name(target.dataset, target.data_dir or None)
        info = data.dataset_info(
            target.dataset, target.dataset_options.to_dict(), target.data_dir or None, prepare=True
        )
        for split in (target.eval_train_split, target.eval_test_split):
            if split:
                data.check_split(info, split)
    except ValueError as error:
        raise TransferError(f"--dataset={target.dataset}: {error}") from None
    if not info.labelled:
        raise TransferError(
            f"--dataset={target.dataset} has no class labels, and the probes need them; "
            "use a labelled dataset (or dataset_options label_key)"
        )
    return info


def transfer_results_path(workdir: str, dataset: str):
    """Where ``evaluate_transfer`` writes: ``workdir/transfer/<dataset>/results.json``."""
    return workdir_io.resolve(workdir) / "transfer" / dataset.replace("/", "_") / "results.json"


def evaluate_transfer(
    workdir: str,
    dataset: str,
    *,
    dataset_options: dict | None = None,
    data_dir: str | None = None,
    eval_train_split: str = "",
    eval_test_split: str = "",
    step: int | None = None,
) -> dict:
    """Linear probe and kNN of a run's frozen encoder on another dataset.

    Args:
      workdir: the ``--workdir`` of a training run.
      dataset: the other dataset (a jaxcl name or any TFDS name).
      dataset_options: its options (see ``jaxcl.data.dataset_info``).
      data_dir: its TFDS data directory (None: TFDS's default).
      eval_train_split: the split the probes are fitted on ('' : its default).
      eval_test_split: the split they are scored on ('' : its default).
      step: a checkpoint step; None for the newest.

    Returns:
      ``{'linear_top1', 'linear_train_top1', 'knn_top1', 'train_examples',
      'test_examples', 'step', 'dataset', 'eval_seconds'}``, also written (on
      process 0) to ``transfer_results_path(workdir, dataset)``.

    Raises:
      TransferError: for an unknown dataset, option or split, an unlabelled
        dataset, or channels that cannot be adapted, before any feature is computed.
    """
    started = time.perf_counter()
    run = restore_run(workdir, step=step, check_data_files=False)
    trainer = run.trainer
    target = _target_config(
        run.config, dataset, dataset_options, data_dir, (eval_train_split, eval_test_split)
    )
    info = _check_target(target)
    adapt_channels(jnp.zeros((1, 1, 1, info.image_shape[-1])), trainer.in_channels)
    spec = data.DataSpec.from_config(target)
    apply = _adapted_feature_fn(trainer.feature_fn, trainer.in_channels)
    variables = trainer.encoder_variables(run.state)
    max_train, max_test = run.config.eval.max_train_examples, run.config.eval.max_test_examples
    train = split_features(
        trainer, variables, spec.eval_train_split, max_train, apply=apply, data=spec,
        description=f"{dataset} {spec.eval_train_split}",
    )  # fmt: skip
    test = split_features(
        trainer, variables, spec.eval_test_split, max_test, apply=apply, data=spec,
        description=f"{dataset} {spec.eval_test_split}",
    )  # fmt: skip
    results = dict(linear_probe(trainer, train, test, num_classes=info.num_classes))
    results["knn_top1"] = knn_top1(trainer, train, test, num_classes=info.num_classes)
    results.update(
        dataset=dataset,
        step=run.step,
        train_examples=len(train.labels),
        test_examples=len(test.labels),
        eval_seconds=time.perf_counter() - started,
    )
    if jax.process_index() == 0:
        workdir_io.write_json(transfer_results_path(workdir, dataset), results)
    return results


@functools.lru_cache(maxsize=8)
def _adapted_feature_fn(feature_fn, channels: int):
    """``feature_fn`` after ``adapt_channels``; cached so its compiled program is reused."""

    def features(variables, images):
        return feature_fn(variables, adapt_channels(images, channels))

    return features
