"""Alignment + uniformity on STL-10 (Wang & Isola, ICML 2020).

The paper's objective align(alpha=2) + (unif(x) + unif(y)) / 2 (t=2), batch
768, SGD lr 0.12 x B/256, 200 epochs, pretraining on unlabelled+train. The paper
used an AlexNet-style encoder on 64 px crops; jaxcl uses ResNet-18 (small stem)
at 96 px and a cosine schedule instead of the paper's step decay. Published
(paper encoder): 83.19% linear top-1.

    python -m jaxcl.main --config=configs/align_uniform_stl10.py --workdir=runs/au_stl10
    python -m jaxcl.main --config=configs/align_uniform_stl10.py:smoke --workdir=/tmp/smoke
"""

from jaxcl.config import default_config, finalize


def get_config(arg: str = ""):
    config = default_config()
    config.method = "align_uniform"
    config.model = "resnet18"
    config.model_options = {"stem": "small"}
    config.projector = "simclr_v1_projection"
    config.dataset = "stl10"
    config.train_split = "unlabelled+train"
    config.image_size = 96
    config.augmentation = "simclr_imagenet"
    config.augment_options = {"jitter_strength": 0.5}
    config.global_batch_size = 768
    config.num_epochs = 200.0
    config.warmup_epochs = 0.0
    config.optimizer = "sgd"
    config.learning_rate = 0.12
    config.learning_rate_scaling = "linear"
    config.weight_decay = 1e-4
    config.align_uniform.align_weight = 1.0
    config.align_uniform.uniform_weight = 1.0
    config.align_uniform.align_alpha = 2.0
    config.align_uniform.uniform_t = 2.0
    config.checkpoint_every_steps = 2000
    return finalize(config, arg)
