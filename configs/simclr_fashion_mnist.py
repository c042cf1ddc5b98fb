"""SimCLR on Fashion-MNIST: the embedded default, sized for a 2-core CPU.

Launch (trains, then runs the offline linear evaluation):

    python -m jaxcl.main --config=configs/simclr_fashion_mnist.py \
        --workdir=runs/simclr_fashion_mnist

Smoke test (a few steps on synthetic data, seconds on a CPU):

    python -m jaxcl.main --config=configs/simclr_fashion_mnist.py:smoke --workdir=/tmp/smoke
"""

from jaxcl.config import default_config


def get_config(arg: str = ""):
    config = default_config()
    config.method = "simclr"
    config.model = "resnet18_cpu"
    config.projector = "simclr_v2_projection"
    config.dataset = "fashion_mnist"
    config.image_size = 28
    config.augmentation = "fashion_mnist"
    config.global_batch_size = 256
    config.num_epochs = 5.0
    config.warmup_epochs = 0.5
    config.optimizer = "lars"
    config.learning_rate = 1.0
    config.weight_decay = 1e-6
    config.temperature = 0.2
    config.log_every_steps = 20
    config.eval.linear_epochs = 30
    if arg == "smoke":
        smoke(config)
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; use '' or 'smoke'.")
    return config


def smoke(config):
    """A few steps of a tiny encoder on synthetic 28x28x1 images (seconds on CPU)."""
    config.model = "resnet_tiny"
    config.dataset = "synthetic"
    config.dataset_options = {
        "image_shape": (28, 28, 1),
        "num_classes": 10,
        "num_examples": {"train": 512, "test": 256},
    }
    config.augmentation = "fashion_mnist"
    config.global_batch_size = 16
    config.num_steps = 4
    config.warmup_epochs = 0.0
    config.log_every_steps = 2
    config.checkpoint_every_steps = 2
    config.projection_dim = 16
    config.predictor_hidden_dim = 32
    config.queue_size = 64
    config.eval.linear_epochs = 2
    config.eval.max_train_examples = 256
    config.eval.max_test_examples = 128
    config.knn_train_examples = 256
    config.progress_bar = False
