"""alpha-CL on CIFAR-100 (Tian, NeurIPS 2022).

ResNet-18 (small stem), batch 128 and temperature 0.5 as in the reference
code (facebookresearch/luckmatters, ssl/real-dataset), and its CIFAR-100
alpha-CL command's pairwise importance: alpha = exp(-r^2 / tau) normalised per
anchor (``alpha_exponent=2``, which its README calls p = 4 in the paper's
notation) with ``alpha_eps=0``. The optimiser (SGD lr 0.5 x B/256, weight
decay 5e-4, 500 epochs, cosine) is jaxcl's choice; the paper reports alpha-CL
comparable to or better than InfoNCE under the same recipe.

    python -m jaxcl.main --config=configs/alpha_cl_cifar100.py --workdir=runs/alpha_cl_c100
    python -m jaxcl.main --config=configs/alpha_cl_cifar100.py:smoke --workdir=/tmp/smoke
"""

from jaxcl.config import default_config, finalize


def get_config(arg: str = ""):
    config = default_config()
    config.method = "alpha_cl"
    config.alpha_cl.alpha_type = "exp"
    config.alpha_cl.alpha_exponent = 2.0
    config.alpha_cl.alpha_eps = 0.0
    config.alpha_cl.temperature = 0.5
    config.model = "resnet18"
    config.model_options = {"stem": "small"}
    config.projector = "simclr_v1_projection"
    config.dataset = "cifar100"
    config.image_size = 32
    config.augmentation = "simclr_cifar"
    config.global_batch_size = 128
    config.num_epochs = 500.0
    config.warmup_epochs = 10.0
    config.optimizer = "sgd"
    config.learning_rate = 0.5
    config.learning_rate_scaling = "linear"
    config.weight_decay = 5e-4
    config.checkpoint_every_steps = 2000
    return finalize(config, arg)
