"""SimCLR's semi-supervised protocol on Fashion-MNIST: fine-tune on 1% of the labels.

The default pretraining run's encoder, fine-tuned end to end on 600 labelled
images (1% of the train split, class-balanced) with SimCLR v1's recipe:
Nesterov momentum, lr 0.05 x B/256, no warmup, no weight decay, random crop
and flip only, 60 epochs of the subset (30 for 10%: ``:10``). Scored on the
whole test split.

Launch:

    python -m jaxcl.finetune --pretrained=runs/simclr_fashion_mnist \
        --workdir=runs/finetune_1pct

From scratch (the same network and recipe, random initialisation):

    python -m jaxcl.finetune --pretrained= --workdir=runs/scratch_1pct

Variants: ``:10`` (10% of the labels, 30 epochs), ``:100`` (all labels, 30
epochs), ``:smoke`` (a few steps on the smoke config's synthetic data, from
scratch unless --pretrained names a smoke run).
"""

from jaxcl.finetuning import default_finetune_config


def get_config(arg: str = ""):
    config = default_finetune_config()
    if arg == "10":
        config.label_fraction, config.num_epochs, config.global_batch_size = 0.1, 30.0, 256
    elif arg == "100":
        config.label_fraction, config.num_epochs, config.global_batch_size = 1.0, 30.0, 256
    elif arg == "smoke":
        config.base_config = "simclr_fashion_mnist:smoke"
        config.label_fraction, config.global_batch_size, config.num_steps = 0.25, 16, 6
        config.log_every_steps, config.checkpoint_every_steps = 2, 2
        config.eval_batch_size, config.progress_bar = 64, False
    elif arg:
        raise ValueError(f"unknown variant {arg!r}; use '', '10', '100' or 'smoke'")
    return config
