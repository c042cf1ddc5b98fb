"""MoCo v3 on ImageNet: ResNet-50, predictor, in-batch keys (Chen, Xie, He 2021).

LARS base lr 0.6 (x B/256), weight decay 1e-6, batch 4096, 100 epochs with 10
warmup, temperature 1.0, momentum 0.99 rising to 1 on a cosine, projector and
predictor of hidden width 4096 and output 256, BYOL's asymmetric augmentations.
Published: 68.9% linear top-1 at 100 epochs.

    python -m jaxcl.main --config=configs/mocov3_imagenet.py --workdir=runs/mocov3_r50
    python -m jaxcl.main --config=configs/mocov3_imagenet.py:smoke --workdir=/tmp/smoke
"""

from jaxcl.config import default_config, finalize


def get_config(arg: str = ""):
    config = default_config()
    config.method = "mocov3"
    config.model = "resnet50"
    config.model_options = {"stem": "imagenet"}
    config.projector = "mocov3_projector"
    config.projection_hidden_dim = 4096
    config.projection_dim = 256
    config.mocov3.predictor_hidden_dim = 4096
    config.dataset = "imagenet2012"
    config.image_size = 224
    config.augmentation = "byol"
    config.global_batch_size = 4096
    config.num_epochs = 100.0
    config.warmup_epochs = 10.0
    config.optimizer = "lars"
    config.learning_rate = 0.6
    config.learning_rate_scaling = "linear"
    config.weight_decay = 1e-6
    config.mocov3.temperature = 1.0
    config.mocov3.momentum_encoder_decay = 0.99
    config.log_every_steps = 100
    config.checkpoint_every_steps = 1000
    config.eval.linear_epochs = 90
    config.eval.linear_protocol = "augmented"  # main_lincls: crop + flip, frozen encoder
    return finalize(config, arg)
