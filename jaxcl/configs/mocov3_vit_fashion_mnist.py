"""MoCo v3 with a small ViT on Fashion-MNIST: the ViT recipe at the size of a 2-core CPU.

MoCo v3's ViT recipe (configs/mocov3_vit_imagenet.py: fixed sin-cos position
embeddings, frozen random patch projection, 3-layer projector, AdamW with
weight decay 0.1, momentum 0.99 -> 1, temperature 0.2) with a ViT of width 128,
depth 6 and 4 heads on 4x4-pixel patches. Like the ResNet default it trains on
20-pixel crops (25 patches) and evaluates the whole 28-pixel images (49
patches: the sin-cos embeddings follow the grid). The epochs are set so that
training takes about as long as the ResNet default's on 2 CPU cores: a ViT
step costs about 4x a ResNet-10 step there (XLA:CPU, 512 views of 20x20), so
it sees under 2 epochs where the ResNet sees 9. Its linear top-1 beside the
ResNet's is in docs/results.md.

    python -m jaxcl.main --config=configs/mocov3_vit_fashion_mnist.py \
        --workdir=runs/mocov3_vit_fashion_mnist
"""

from jaxcl.config import default_config, finalize


def get_config(arg: str = ""):
    config = default_config()
    config.method = "mocov3"
    config.model = "vit_tiny"
    config.model_options = {
        "width": 128,
        "depth": 6,
        "num_heads": 4,
        "patch_size": 4,
        "frozen_patch_embedding": True,
    }
    config.projector = "mocov3_projector"
    config.projection_layers = 3
    config.projection_hidden_dim = 512
    config.projection_dim = 128
    config.mocov3.predictor_hidden_dim = 512
    config.dataset = "fashion_mnist"
    config.image_size = 20
    config.eval.image_size = 28
    config.augmentation = "fashion_mnist"
    config.global_batch_size = 256
    config.num_epochs = 1.8
    config.warmup_epochs = 0.3
    config.optimizer = "adamw"
    # MoCo v3's 1.5e-4 suits 300 epochs; a run of two epochs needs a larger step.
    config.learning_rate = 1e-3
    config.learning_rate_scaling = "linear"
    config.weight_decay = 0.1
    config.mocov3.temperature = 0.2
    config.mocov3.momentum_encoder_decay = 0.99
    config.log_every_steps = 20
    config.eval.linear_epochs = 30
    return finalize(config, arg)
