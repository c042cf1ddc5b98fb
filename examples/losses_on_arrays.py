"""Contrastive losses on plain arrays: no model, no mesh, no data pipeline.

Every loss in `jaxcl.losses` is a pure function of embeddings, so it can be
called on NumPy or JAX arrays in a notebook, differentiated with jax.grad and
jitted. Run: python examples/losses_on_arrays.py
"""

import jax
import jax.numpy as jnp

from jaxcl import losses

key_anchor, key_noise, key_queue, key_other = jax.random.split(jax.random.key(0), 4)
batch, dim = 32, 16

# Two "views" of 32 examples: the second is the first plus a little noise, so
# row i of each is a positive pair. A batch of unrelated embeddings for contrast.
z1 = jax.random.normal(key_anchor, (batch, dim))
z2 = z1 + 0.3 * jax.random.normal(key_noise, (batch, dim))
unrelated = jax.random.normal(key_other, (batch, dim))

print("NT-Xent (SimCLR), T = 0.5")
print(f"  aligned views   {losses.nt_xent(z1, z2, temperature=0.5):.4f}")
print(f"  unrelated views {losses.nt_xent(z1, unrelated, temperature=0.5):.4f}")

queue = jax.random.normal(key_queue, (256, dim))  # MoCo's negatives
print(f"InfoNCE with a 256-key queue (MoCo v2)   {losses.info_nce(z1, z2, queue):.4f}")
print(f"InfoNCE with in-batch keys (MoCo v3)     {losses.info_nce(z1, z2, temperature=1.0):.4f}")

print("Wang & Isola metrics (lower is better)")
print(f"  alignment  {losses.alignment(z1, z2):.4f}")
print(f"  uniformity {losses.uniformity(z1):.4f}")

labels = jnp.arange(batch) % 4  # four classes
print(f"SupCon, 4 classes        {losses.sup_con(jnp.stack([z1, z2], axis=1), labels):.4f}")

for alpha_type in ("exp", "inverse", "constant"):
    value = losses.alpha_cl(
        z1, z2, alpha_type=alpha_type, temperature=0.5, alpha_exponent=2.0, inverse_exponent=2.0
    )
    print(f"alpha-CL ({alpha_type:8s})      {value:.4f}")
print(f"quadratic (= constant)   {losses.quadratic(z1, z2):.4f}")

# Gradients and jit work as on any JAX function: the gradient pulls each view
# toward its positive and away from its negatives, so a step against it lowers
# the loss.
loss_fn = jax.jit(lambda a: losses.nt_xent(a, z2, temperature=0.5))
grad = jax.grad(loss_fn)(z1)
stepped = z1 - 20.0 * grad
print(f"NT-Xent before / after one gradient step: {loss_fn(z1):.4f} / {loss_fn(stepped):.4f}")
