"""Augment one image with jaxcl's SimCLR and MoCo v2 augmentations and look at the views.

The augmentations in `jaxcl.data.augment` are stateless TensorFlow functions:
a view depends only on its seed, built from (data seed, example index, epoch,
view index) by `view_seed`, so the same call always draws the same view.
The image is the photograph that ships with matplotlib; no download needed.
Run: python examples/augment_one_image.py [output.png]
"""

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.cbook
import matplotlib.pyplot as plt
import numpy as np

from jaxcl.data import augment

image = plt.imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
image = image.astype(np.float32) / 255.0  # the augmentations take floats in [0, 1]

presets = ("simclr_imagenet", "mocov2")
num_views = 6
fig, axes = plt.subplots(len(presets), num_views + 1, figsize=(2 * (num_views + 1), 4.4))
for row, preset in enumerate(presets):
    configs = augment.get_preset(preset)  # one config per distinct view (BYOL has two)
    axes[row, 0].imshow(image)
    axes[row, 0].set_title("original", fontsize=9)
    for view in range(num_views):
        seed = augment.view_seed(seed=0, index=0, epoch=0, view=view)
        config = configs[view % len(configs)]
        augmented = augment.augment_view(image, seed, size=(224, 224), config=config)
        axes[row, view + 1].imshow(np.asarray(augmented))
        axes[row, view + 1].set_title(f"{preset} view {view}", fontsize=8)
for ax in axes.flat:
    ax.axis("off")
fig.tight_layout()
path = sys.argv[1] if len(sys.argv) > 1 else "augmented_views.png"
fig.savefig(path, dpi=70)
print(f"wrote {path}")
