"""Optimizers and learning-rate schedules of the SimCLR/MoCo recipes, built on optax.

The one subtlety worth a module of its own: ``optax.lars`` applies weight decay
and trust-ratio adaptation to *every* parameter unless told otherwise, while the
SimCLR and MoCo v3 recipes exclude biases and BatchNorm parameters from both.
``exclude_from_decay`` builds that mask (parameters with ``ndim <= 1``, which
for ResNets and MLP heads are exactly the biases and BatchNorm scales/offsets).
"""

from __future__ import annotations

import math

import jax
import optax

__all__ = [
    "DECAY_TARGETS",
    "OPTIMIZERS",
    "create_optimizer",
    "decay_mask",
    "learning_rate_schedule",
    "scaled_learning_rate",
    "trust_ratio_mask",
]

OPTIMIZERS = ("lars", "sgd", "adamw")
# Which parameters weight decay reaches: 'matrices' (ndim > 1: SimCLR, timm,
# DeiT) or 'all' (MoCo v3's AdamW, which decays every parameter it trains).
DECAY_TARGETS = ("matrices", "all")
LR_SCALINGS = ("linear", "sqrt", "none")


def scaled_learning_rate(base_learning_rate: float, global_batch_size: int, scaling: str) -> float:
    """The peak learning rate of SimCLR's scaling rules.

    Args:
      base_learning_rate: the recipe's base rate.
      global_batch_size: examples per step over all devices.
      scaling: ``'linear'`` (lr * B / 256), ``'sqrt'`` (lr * sqrt(B)) or ``'none'``.

    Returns:
      The peak learning rate.

    References:
      Chen et al. 2020 (SimCLR), Appendix B.1, https://arxiv.org/abs/2002.05709
    """
    if scaling == "linear":
        return base_learning_rate * global_batch_size / 256
    if scaling == "sqrt":
        return base_learning_rate * math.sqrt(global_batch_size)
    if scaling == "none":
        return base_learning_rate
    raise ValueError(
        f"learning_rate_scaling={scaling!r} is unknown; use one of {', '.join(LR_SCALINGS)}."
    )


def learning_rate_schedule(
    peak_learning_rate: float, total_steps: int, warmup_steps: int
) -> optax.Schedule:
    """Linear warmup from 0 to the peak, then cosine decay to 0 at ``total_steps``.

    Args:
      peak_learning_rate: rate reached at the end of warmup.
      total_steps: length of the whole run in steps.
      warmup_steps: length of the linear warmup (clipped to ``total_steps - 1``).

    Returns:
      An optax schedule, step -> learning rate.
    """
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak_learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=0.0,
    )


def decay_mask(params):
    """True for the parameters that get weight decay and LARS adaptation.

    Biases and BatchNorm scales/offsets (all parameters with ``ndim <= 1``) are
    excluded, as in SimCLR's LARS and MoCo v3. Works on any params pytree.
    """
    return jax.tree.map(lambda p: p.ndim > 1, params)


def trust_ratio_mask(params):
    """``decay_mask`` without the online probe (top-level key ``'probe'``).

    The probe is a linear classifier on stop-gradient features that starts near
    zero; LARS would scale its step by ``eta * ||w|| / ||g||`` (about 1e-3 of
    its tiny norm), so it would hardly move. It takes plain momentum SGD steps.
    """
    mask = decay_mask(params)
    if isinstance(mask, dict) and "probe" in mask:
        mask = {**mask, "probe": jax.tree.map(lambda _: False, mask["probe"])}
    return mask


def create_optimizer(
    name: str,
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    trust_coefficient: float = 1e-3,
    nesterov: bool = False,
    decay: str = "matrices",
) -> optax.GradientTransformation:
    """An optax optimizer by name, with biases and BatchNorm excluded from decay.

    * ``'lars'``: ``optax.lars`` with ``weight_decay_mask=decay_mask`` and
      ``trust_ratio_mask=trust_ratio_mask`` (the online probe, if any, is also
      left out of the trust ratio); its update is SimCLR's: ``g += wd * w``,
      trust ratio ``eta ||w|| / ||g||`` (1 if either norm is 0), then
      ``v = m v + lr * trust * g`` and ``w -= v`` (the rate sits inside the
      momentum buffer).
    * ``'sgd'``: SGD with (optionally Nesterov) momentum, L2 decay added to the
      gradient of the masked parameters, as in MoCo v2 and linear evaluation.
    * ``'adamw'``: AdamW with the decay mask.

    Args:
      name: one of ``OPTIMIZERS``.
      learning_rate: a constant or an optax schedule.
      weight_decay: decay coefficient.
      momentum: momentum of LARS and SGD.
      trust_coefficient: LARS eta (SimCLR: 1e-3).
      nesterov: Nesterov momentum for SGD and LARS.
      decay: ``'matrices'`` (``decay_mask``) or ``'all'``: weight decay on every
        parameter, biases and normalisation ones included, as MoCo v3's
        ``torch.optim.AdamW(model.parameters(), ...)`` (LARS's trust ratio
        keeps its mask either way).

    Returns:
      An ``optax.GradientTransformation``.

    References:
      You et al., "Large Batch Training of Convolutional Networks", 2017,
      https://arxiv.org/abs/1708.03888
    """
    if decay not in DECAY_TARGETS:
        raise ValueError(f"decay={decay!r} is unknown; use one of {', '.join(DECAY_TARGETS)}.")
    mask = decay_mask if decay == "matrices" else None
    if name == "lars":
        return optax.lars(
            learning_rate,
            weight_decay=weight_decay,
            weight_decay_mask=mask,
            trust_coefficient=trust_coefficient,
            trust_ratio_mask=trust_ratio_mask,
            momentum=momentum,
            nesterov=nesterov,
        )
    if name == "sgd":
        return optax.chain(
            optax.add_decayed_weights(weight_decay, mask=mask),
            optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov),
        )
    if name == "adamw":
        return optax.adamw(learning_rate, weight_decay=weight_decay, mask=mask)
    raise ValueError(f"optimizer={name!r} is unknown; use one of {', '.join(OPTIMIZERS)}.")
