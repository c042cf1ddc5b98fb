"""Supervised contrastive learning on CIFAR-10 (Khosla et al., NeurIPS 2020).

ResNet-50 (small stem), batch 1024, SGD lr 0.5 (no scaling), weight decay
1e-4, temperature 0.1, 1000 epochs with cosine decay, SimCLR CIFAR
augmentations. Published: 96.0% top-1 (ResNet-50); solo-learn's ResNet-18
reaches 93.82%.

    python -m jaxcl.main --config=configs/supcon_cifar10.py --workdir=runs/supcon_cifar10
    python -m jaxcl.main --config=configs/supcon_cifar10.py:smoke --workdir=/tmp/smoke
"""

from jaxcl.config import default_config, finalize


def get_config(arg: str = ""):
    config = default_config()
    config.method = "supcon"
    config.model = "resnet50"
    config.model_options = {"stem": "small"}
    config.projector = "simclr_v1_projection"
    config.dataset = "cifar10"
    config.image_size = 32
    config.augmentation = "simclr_cifar"
    config.global_batch_size = 1024
    config.num_epochs = 1000.0
    config.warmup_epochs = 10.0
    config.optimizer = "sgd"
    config.learning_rate = 0.5
    config.learning_rate_scaling = "none"
    config.weight_decay = 1e-4
    config.supcon.temperature = 0.1
    config.checkpoint_every_steps = 2000
    return finalize(config, arg)
