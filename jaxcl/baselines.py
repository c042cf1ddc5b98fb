"""The two reference points every linear-evaluation number is read against.

* logistic regression on raw pixels: what a linear classifier gets without any
  representation learning (Fashion-MNIST: about 84%);
* the same encoder at random initialisation with the same linear evaluation:
  what the architecture alone gives, before any training.

A learnt representation is only worth its training time by how far it beats both.
"""

from __future__ import annotations

import numpy as np

__all__ = ["random_encoder_linear_top1", "raw_pixels_linear_top1"]


def _eval_split_arrays(config):
    from jaxcl.eval import eval_arrays

    train = eval_arrays(config, config.eval_train_split, config.eval.max_train_examples)
    test = eval_arrays(config, config.eval_test_split, config.eval.max_test_examples)
    return train, test


def _linear_top1(config, num_classes, train_features, train_labels, test_features, test_labels):
    from jaxcl import evaluate

    return evaluate.linear_evaluation(
        train_features,
        train_labels,
        test_features,
        test_labels,
        num_classes=num_classes,
        epochs=config.eval.linear_epochs,
        batch_size=config.eval.linear_batch_size,
        learning_rate=config.eval.linear_learning_rate,
        weight_decay=config.eval.linear_weight_decay,
        seed=config.seed,
    )["linear_top1"]


def raw_pixels_linear_top1(config, num_classes: int) -> float:
    """Test top-1 of the linear evaluation protocol on flattened, standardised pixels.

    Args:
      config: a training config (dataset, splits, image size, eval settings).
      num_classes: classes of the dataset.

    Returns:
      Accuracy in [0, 1].
    """
    (train_images, train_labels), (test_images, test_labels) = _eval_split_arrays(config)
    flatten = lambda images: np.reshape(images, (len(images), -1))  # noqa: E731
    return _linear_top1(
        config, num_classes, flatten(train_images), train_labels, flatten(test_images), test_labels
    )


def random_encoder_linear_top1(trainer) -> float:
    """Test top-1 of the linear evaluation of the run's encoder at initialisation.

    Args:
      trainer: the ``jaxcl.train.Trainer`` of the run (its initial state is
        the random encoder; BatchNorm uses its initial running statistics).

    Returns:
      Accuracy in [0, 1].
    """
    from jaxcl import evaluate

    config = trainer.config
    (train_images, train_labels), (test_images, test_labels) = _eval_split_arrays(config)
    encode = trainer.encoder_fn(trainer.initial_state())
    batch = config.eval.feature_batch_size
    return _linear_top1(
        config,
        trainer.num_classes,
        evaluate.extract_features(encode, train_images, batch_size=batch),
        train_labels,
        evaluate.extract_features(encode, test_images, batch_size=batch),
        test_labels,
    )


def _main(argv):
    import json

    from absl import flags

    from jaxcl.train import Trainer

    del argv
    config = flags.FLAGS.config
    trainer = Trainer(config)
    results = {
        "baseline_raw_pixels_top1": raw_pixels_linear_top1(config, trainer.num_classes),
        "baseline_random_encoder_top1": random_encoder_linear_top1(trainer),
    }
    print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    # python -m jaxcl.baselines --config=configs/simclr_fashion_mnist.py
    from absl import app
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
    app.run(_main)
