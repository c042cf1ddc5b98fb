"""SimCLR on ImageNet: ResNet-50, batch 4096, 100 epochs (Chen et al. 2020).

LARS at lr 0.075 with square-root scaling (= 4.8 at B 4096), weight decay 1e-4,
temperature 0.1, 10 warmup epochs, global BatchNorm, 3-layer projection head to
128, bfloat16 compute on GPU/TPU. Published: 69.1% linear top-1 (1000 epochs;
about 64-65% at 100 epochs). Needs imagenet2012 prepared in the TFDS data_dir.

    python -m jaxcl.main --config=configs/simclr_imagenet.py --workdir=/shared/runs/simclr_r50
    python -m jaxcl.main --config=configs/simclr_imagenet.py:smoke --workdir=/tmp/smoke
"""

from jaxcl.config import default_config, finalize


def get_config(arg: str = ""):
    config = default_config()
    config.method = "simclr"
    config.model = "resnet50"
    config.model_options = {"stem": "imagenet"}
    config.projector = "simclr_v2_projection"
    config.dataset = "imagenet2012"
    config.image_size = 224
    config.augmentation = "simclr_imagenet"
    config.global_batch_size = 4096
    config.num_epochs = 100.0
    config.warmup_epochs = 10.0
    config.optimizer = "lars"
    config.learning_rate = 0.075
    config.learning_rate_scaling = "sqrt"
    config.weight_decay = 1e-4
    config.simclr.temperature = 0.1
    config.log_every_steps = 100
    config.checkpoint_every_steps = 1000
    config.eval.linear_epochs = 90
    config.eval.linear_batch_size = 4096
    config.eval.linear_protocol = "augmented"  # SimCLR's: crop + flip over the frozen encoder
    return finalize(config, arg)
