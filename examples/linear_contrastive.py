"""Train a linear contrastive encoder in about twenty lines, and compare it with PCA.

Data from the spiked covariance model x = U* z + noise with heteroskedastic
noise; views by complementary random masks; the linear contrastive loss of
Ji et al. (arXiv:2110.02473). Contrastive learning finds the core subspace U*
where PCA is misled by the noisy coordinates.
Run: python examples/linear_contrastive.py
"""

import jax
import optax

from jaxcl.theory import learners, make_spiked_covariance, masked_views, subspace_distance

model = make_spiked_covariance(dim=50, rank=3, noise_ratio=100.0, seed=0)
x, _ = model.sample(seed=1, num_samples=2000)


def loss_fn(W, key):
    view1, view2 = masked_views(key, x)  # (A x, (I - A) x), fresh masks every step
    return learners.linear_contrastive_loss(W, view1, view2, regularization=1.0)
    # or: jaxcl.losses.nt_xent(view1 @ W.T, view2 @ W.T, temperature=0.5)


optimizer = optax.adam(optax.cosine_decay_schedule(0.02, 600))
W = 0.01 * jax.random.normal(jax.random.key(0), (3, 50))
opt_state = optimizer.init(W)


@jax.jit
def step(W, opt_state, key):
    loss, grad = jax.value_and_grad(loss_fn)(W, key)
    updates, opt_state = optimizer.update(grad, opt_state)
    return optax.apply_updates(W, updates), opt_state, loss


for i in range(600):
    W, opt_state, loss = step(W, opt_state, jax.random.key(i))

print(f"final loss {loss:.4f}")
print(
    f"sin-theta to U*: contrastive {subspace_distance(model.core_basis, W):.3f}, "
    f"PCA {subspace_distance(model.core_basis, learners.pca_encoder(x, 3)):.3f}"
)
