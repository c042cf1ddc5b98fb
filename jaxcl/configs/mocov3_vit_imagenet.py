"""MoCo v3 on ImageNet with a ViT-S/16 (Chen, Xie, He 2021, Section 4 and CONFIG.md).

ViT-Small, patch 16, MoCo v3's fixed 2-D sin-cos position embeddings and frozen
random patch projection (--stop-grad-conv1); 3-layer projector (4096 hidden,
256 out) and 2-layer predictor; AdamW, base lr 1.5e-4 (x B/256), weight decay
0.1, batch 4096, 300 epochs with 40 of warmup, momentum 0.99 rising to 1 on a
cosine, temperature 0.2, BYOL's asymmetric augmentations. Linear probe as
main_lincls for ViTs: SGD lr 3 (x B/256) at batch 1024, 90 epochs, crop + flip.
Published: 73.2% linear top-1 (ViT-S/16), 76.7% with model=vit_base.

As the official code, AdamW decays every trained array, biases and LayerNorm
parameters included (``weight_decay_on='all'``; jaxcl's default 'matrices'
leaves them undecayed, as DeiT and timm do).

    python -m jaxcl.main --config=configs/mocov3_vit_imagenet.py --workdir=runs/mocov3_vits
    python -m jaxcl.main --config=configs/mocov3_vit_imagenet.py:smoke --workdir=/tmp/smoke
"""

from jaxcl.config import default_config, finalize


def get_config(arg: str = ""):
    config = default_config()
    config.method = "mocov3"
    config.model = "vit_small"
    config.model_options = {"patch_size": 16, "frozen_patch_embedding": True}
    config.projector = "mocov3_projector"
    config.projection_layers = 3
    config.projection_hidden_dim = 4096
    config.projection_dim = 256
    config.mocov3.predictor_hidden_dim = 4096
    config.dataset = "imagenet2012"
    config.image_size = 224
    config.augmentation = "byol"
    config.global_batch_size = 4096
    config.num_epochs = 300.0
    config.warmup_epochs = 40.0
    config.optimizer = "adamw"
    config.learning_rate = 1.5e-4
    config.learning_rate_scaling = "linear"
    config.weight_decay = 0.1
    config.weight_decay_on = "all"
    config.mocov3.temperature = 0.2
    config.mocov3.momentum_encoder_decay = 0.99
    config.log_every_steps = 100
    config.checkpoint_every_steps = 1000
    config.eval.linear_epochs = 90
    config.eval.linear_protocol = "augmented"
    config.eval.linear_batch_size = 1024
    config.eval.linear_learning_rate = 3.0
    return finalize(config, arg)
