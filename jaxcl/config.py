"""The default training configuration: every key a jaxcl config may set.

Config files in ``configs/`` start from ``default_config()`` and override what
their recipe changes. The returned ConfigDict is locked, so a misspelt key in a
config file or on the command line (``--config.temprature=0.5``) fails at once
instead of being silently ignored.
"""

from __future__ import annotations

import ml_collections


def default_config() -> ml_collections.ConfigDict:
    """Returns the defaults shared by all configs (SimCLR on Fashion-MNIST, CPU-sized).

    Returns:
      A locked ``ml_collections.ConfigDict``.
    """
    config = ml_collections.ConfigDict()

    # What to train.
    config.method = "simclr"
    config.model = "resnet18_cpu"
    config.model_options = ml_collections.ConfigDict({"zero_init_residual": False})
    config.projector = "simclr_v2_projection"
    config.projection_dim = 128
    config.projection_hidden_dim = 0  # 0: the head's default (the encoder width)
    config.predictor_hidden_dim = 4096  # MoCo v3 only
    # "auto": float32 on CPU, bfloat16 on GPU/TPU. Params, optimizer state,
    # BatchNorm statistics and loss logits stay float32 whatever this says.
    config.compute_dtype = "auto"

    # Data.
    config.dataset = "fashion_mnist"
    config.train_split = ""  # "": the dataset's pretraining split
    config.eval_train_split = "train"
    config.eval_test_split = "test"
    config.data_dir = ""  # "": TFDS's default
    config.dataset_options = ml_collections.ConfigDict()
    config.image_size = 28
    config.augmentation = "fashion_mnist"
    config.augment_options = ml_collections.ConfigDict()
    config.num_views = 2

    # Schedule and optimizer (SimCLR: LARS, linear scaling, warmup then cosine).
    config.global_batch_size = 256
    config.num_epochs = 10.0
    config.num_steps = 0  # > 0 overrides num_epochs
    config.optimizer = "lars"
    config.learning_rate = 0.3
    config.learning_rate_scaling = "linear"
    config.warmup_epochs = 1.0
    config.weight_decay = 1e-6
    config.momentum = 0.9
    config.trust_coefficient = 1e-3

    # Method hyper-parameters.
    config.temperature = 0.1
    config.queue_size = 4096  # MoCo v2
    config.momentum_encoder_decay = 0.99  # MoCo m (v2: 0.999 at ImageNet scale)
    config.align_weight = 1.0
    config.uniform_weight = 1.0
    config.align_alpha = 2.0
    config.uniform_t = 2.0
    config.alpha_type = "exp"
    config.alpha_power = 1.0
    # The online linear probe (on stop-gradient features) takes plain momentum
    # steps of the shared schedule; this weight is its learning-rate factor:
    # 0.1 of a LARS-scale rate of ~1, like solo-learn's classifier rate of 0.1.
    config.probe_weight = 0.1

    # Book-keeping.
    config.seed = 0
    config.log_every_steps = 50
    config.checkpoint_every_steps = 500
    config.max_checkpoints_to_keep = 2
    config.nonfinite_loss = "raise"  # or "skip": drop the update of a non-finite step
    config.progress_bar = True

    # Monitoring kNN during training (0 = off) and evaluation at the end.
    config.knn_every_steps = 0
    config.knn_k = 200
    config.knn_temperature = 0.1
    config.knn_train_examples = 10000
    config.eval = ml_collections.ConfigDict()
    config.eval.run_at_end = True
    config.eval.linear_epochs = 100
    config.eval.linear_batch_size = 512
    config.eval.linear_learning_rate = 0.1
    config.eval.linear_weight_decay = 0.0
    config.eval.feature_batch_size = 1024
    config.eval.max_train_examples = 0  # 0: the whole split
    config.eval.max_test_examples = 0
    config.eval.baselines = False  # also evaluate raw pixels and the random encoder

    config.lock()
    return config


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks any config to a few steps of a tiny encoder on synthetic data.

    Keeps the method, optimizer and loss of the recipe, so ``<config>:smoke``
    exercises the same code path in seconds on a CPU. The image shape follows
    the recipe's channels (1 for Fashion-MNIST, 3 otherwise) at 16x16.

    Args:
      config: a full config; modified in place.

    Returns:
      The same config.
    """
    channels = 1 if config.dataset == "fashion_mnist" else 3
    config.model = "resnet_tiny"
    config.model_options = {"zero_init_residual": False}
    config.dataset = "synthetic"
    config.dataset_options = {
        "image_shape": (16, 16, channels),
        "num_classes": 10,
        "num_examples": {"train": 256, "test": 128},
    }
    config.image_size = 16
    config.train_split = ""
    config.compute_dtype = "float32"
    config.global_batch_size = 16
    config.num_steps = 4
    config.warmup_epochs = 0.0
    config.log_every_steps = 2
    config.checkpoint_every_steps = 2
    config.projection_dim = 16
    config.projection_hidden_dim = 32
    config.predictor_hidden_dim = 32
    config.queue_size = 64
    config.knn_every_steps = 0
    config.knn_train_examples = 256
    config.eval.linear_epochs = 2
    config.eval.max_train_examples = 256
    config.eval.max_test_examples = 128
    config.progress_bar = False
    return config


def finalize(config: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
    """Applies a config file's variant argument: ``''`` (the recipe) or ``'smoke'``."""
    if arg == "smoke":
        return smoke(config)
    if arg:
        raise ValueError(f"unknown config variant {arg!r}; use no variant or ':smoke'.")
    return config
