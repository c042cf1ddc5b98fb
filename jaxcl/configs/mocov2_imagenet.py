"""MoCo v2 on ImageNet: ResNet-50, queue 65536, momentum 0.999 (Chen et al. 2020).

SGD lr 0.03 at batch 256 (linear scaling), weight decay 1e-4, 200 epochs,
cosine decay, temperature 0.2, MLP head 2048-128, MoCo v2 augmentations (with
blur). Published: 67.7% linear top-1. jaxcl symmetrises the loss over the two
views (see ``jaxcl.methods.moco``) and uses global BatchNorm instead of
shuffling BN.

    python -m jaxcl.main --config=configs/mocov2_imagenet.py --workdir=runs/mocov2_r50
    python -m jaxcl.main --config=configs/mocov2_imagenet.py:smoke --workdir=/tmp/smoke
"""

from jaxcl.config import default_config, finalize


def get_config(arg: str = ""):
    config = default_config()
    config.method = "mocov2"
    config.model = "resnet50"
    config.model_options = {"stem": "imagenet"}
    config.projector = "mocov2_projection"
    config.projection_hidden_dim = 2048
    config.projection_dim = 128
    config.dataset = "imagenet2012"
    config.image_size = 224
    config.augmentation = "mocov2"
    config.global_batch_size = 256
    config.num_epochs = 200.0
    config.warmup_epochs = 0.0
    config.optimizer = "sgd"
    config.learning_rate = 0.03
    config.learning_rate_scaling = "linear"
    config.weight_decay = 1e-4
    config.mocov2.temperature = 0.2
    config.mocov2.queue_size = 65536
    config.mocov2.momentum_encoder_decay = 0.999
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
    config.eval.linear_epochs = 100
    config.eval.linear_learning_rate = 30.0
    config.eval.linear_protocol = "augmented"  # main_lincls: crop + flip, frozen encoder
    config.eval.linear_batch_size = 256  # main_lincls: lr 30 at batch 256
    return finalize(config, arg)
