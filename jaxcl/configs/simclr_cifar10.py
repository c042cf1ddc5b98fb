"""SimCLR on CIFAR-10: the paper's ResNet-18 recipe (Chen et al. 2020, Appendix B.9).

ResNet-18 with the 3x3 stride-1 stem and no max-pool, batch 512, 1000 epochs,
LARS at lr 1.0 (linear scaling), weight decay 1e-4, temperature 0.5, colour
jitter strength 0.5 and no blur. Published: about 91% linear top-1.

    python -m jaxcl.main --config=configs/simclr_cifar10.py --workdir=runs/simclr_cifar10
    python -m jaxcl.main --config=configs/simclr_cifar10.py:smoke --workdir=/tmp/smoke
"""

from jaxcl.config import default_config, finalize


def get_config(arg: str = ""):
    config = default_config()
    config.method = "simclr"
    config.model = "resnet18"
    config.model_options = {"stem": "small"}
    config.projector = "simclr_v2_projection"
    config.dataset = "cifar10"
    config.image_size = 32
    config.augmentation = "simclr_cifar"
    config.global_batch_size = 512
    config.num_epochs = 1000.0
    config.warmup_epochs = 10.0
    config.optimizer = "lars"
    config.learning_rate = 1.0
    config.learning_rate_scaling = "linear"
    config.weight_decay = 1e-4
    config.simclr.temperature = 0.5
    config.checkpoint_every_steps = 2000
    config.knn_every_steps = 5000
    config.eval.linear_epochs = 100
    return finalize(config, arg)
