"""The two reference points every linear-evaluation number is read against.

* logistic regression on raw pixels: what a linear classifier gets without any
  representation learning (Fashion-MNIST: about 84%);
* the same encoder at random initialisation with the same linear evaluation:
  what the architecture alone gives, before any training.

A learnt representation is only worth its training time by how far it beats both.
Both stream their splits through the run's mesh like the evaluation itself
(``jaxcl.run_probes``); raw pixels are only practical for small images, which
``validate_config`` checks before a run starts.
"""

from __future__ import annotations

from jaxcl import features
from jaxcl.run_probes import linear_probe, split_features

__all__ = ["baselines", "random_encoder_linear_top1", "raw_pixels_linear_top1"]


def _linear_top1_of(trainer, apply, variables) -> float:
    spec, eval_config = trainer.data, trainer.config.eval
    train = split_features(
        trainer, variables, spec.eval_train_split, eval_config.max_train_examples, apply=apply
    )
    test = split_features(
        trainer, variables, spec.eval_test_split, eval_config.max_test_examples, apply=apply
    )
    return linear_probe(trainer, train, test)["linear_top1"]


def raw_pixels_linear_top1(trainer) -> float:
    """Test top-1 of the run's linear evaluation on flattened, standardised pixels.

    Args:
      trainer: the run's ``jaxcl.train.Trainer`` (data, mesh, ``config.eval``).

    Returns:
      Accuracy in [0, 1].
    """
    return _linear_top1_of(trainer, features.flatten_pixels, {})


def random_encoder_linear_top1(trainer) -> float:
    """Test top-1 of the run's linear evaluation of its encoder at initialisation.

    Args:
      trainer: the run's ``jaxcl.train.Trainer``; its initial state is the
        random encoder (BatchNorm with its initial running statistics).

    Returns:
      Accuracy in [0, 1].
    """
    variables = trainer.encoder_variables(trainer.initial_state())
    return _linear_top1_of(trainer, trainer.feature_fn, variables)


def baselines(trainer) -> dict[str, float]:
    """Both baselines: ``baseline_raw_pixels_top1`` and ``baseline_random_encoder_top1``."""
    return {
        "baseline_raw_pixels_top1": raw_pixels_linear_top1(trainer),
        "baseline_random_encoder_top1": random_encoder_linear_top1(trainer),
    }
