"""SimCLR train-step throughput: jaxcl vs a plain PyTorch reference of the same step.

The step: ResNet-18 with SimCLR's CIFAR stem at full width (11.2M parameters),
SimCLR v2 projection head (512-512-512-128, BatchNorm), NT-Xent (T 0.1) and LARS
(SimCLR equations, biases and BatchNorm excluded), on 64 examples x 2 views of
32x32x3 float32 images, both views in one pass (BatchNorm over all 128 images).

Three contestants, timed in one process, interleaved round by round so that
the load of a shared machine falls on all of them alike:

* ``trainer``: ``jaxcl.train.Trainer(config).train_step`` on placed batches, the
  code path of ``jaxcl.main``. It does more than the reference: an online
  linear probe on stop-gradient features (a 512x10 layer), alignment and
  uniformity metrics, gradient and parameter norms, a finiteness check, and a
  shard_map over the (here one-device) data mesh.
* ``step``: the same network, loss and optimizer from jaxcl's pieces
  (``jaxcl.models``, ``jaxcl.losses.nt_xent``, ``jaxcl.optim``) in a
  hand-written jitted step with the state donated; no probe, no metrics.
* ``torch``: ``bench/torch_reference.py`` (PyTorch, eager, NCHW unless
  ``--channels-last``).

Prints one result line: median images/s of each (an image here is one example,
i.e. two augmented views, as ``images_per_sec`` in jaxcl's logs) and the
ratios jaxcl/torch.

Run (set XLA_FLAGS in the environment to try XLA:CPU options):
  nice -n 15 .venv/bin/python bench/train_step.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcl import losses, models, optim, xla_defaults
from jaxcl.config import default_config
from jaxcl.contrastive_network import ContrastiveNetwork
from jaxcl.models import functional
from jaxcl.train import Trainer

# jaxcl's XLA:CPU defaults, as the CLIs apply them (before JAX starts).
xla_defaults.apply_cpu_defaults()

TEMPERATURE = 0.1
LEARNING_RATE = 0.3 * 64 / 256  # SimCLR's 0.3 x B / 256 at B = 64
WEIGHT_DECAY = 1e-6


def trainer_config(batch: int, dtype: str):
    """The jaxcl config of this benchmark: SimCLR, ResNet-18 small stem, LARS."""
    config = default_config()
    config.method = "simclr"
    config.model = "resnet18"
    config.model_options = {"stem": "small"}
    config.dataset = "synthetic"
    config.dataset_options = {"image_shape": (32, 32, 3), "num_classes": 10}
    config.image_size = 32
    config.global_batch_size = batch
    config.optimizer = "lars"
    config.learning_rate = 0.3
    config.weight_decay = WEIGHT_DECAY
    config.simclr.temperature = TEMPERATURE
    config.compute_dtype = dtype
    config.num_steps = 1000
    config.warmup_epochs = 0.0
    config.progress_bar = False
    return config


def make_trainer_step(batch: int, dtype: str, views: np.ndarray):
    trainer = Trainer(trainer_config(batch, dtype))
    mesh = trainer.mesh
    with jax.set_mesh(mesh):
        state = trainer.initial_state()
        placed = {
            "views": jax.device_put(views, NamedSharding(mesh, P("data"))),
            "label": jax.device_put(np.zeros(batch, np.int32), NamedSharding(mesh, P("data"))),
        }
    holder = {"state": state}

    def run():
        with jax.set_mesh(mesh):
            holder["state"], metrics = trainer.train_step(holder["state"], placed)
        return jax.block_until_ready(metrics["loss"])

    return run


def make_minimal_step(batch: int, dtype: str, views: np.ndarray, return_jitted: bool = False):
    compute_dtype = jnp.dtype(dtype)
    rngs = nnx.Rngs(0)
    encoder = models.create("resnet18", stem="small", dtype=compute_dtype, rngs=rngs)
    projector = models.create(
        "simclr_v2_projection",
        in_features=encoder.num_features,
        out_features=128,
        dtype=compute_dtype,
        rngs=rngs,
    )
    graphdef, params, batch_stats = functional.split(ContrastiveNetwork(encoder, projector))
    optimizer = optim.create_optimizer("lars", LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    state = {"params": params, "batch_stats": batch_stats, "opt_state": optimizer.init(params)}
    state = jax.tree.map(jnp.array, state)

    def step(state, views):
        images = jnp.swapaxes(views, 0, 1).reshape((-1, *views.shape[2:]))
        images = images.astype(compute_dtype)

        def loss_fn(params):
            outputs, new_batch_stats = functional.apply(
                graphdef, params, state["batch_stats"], images, train=True
            )
            z = outputs["projections"]
            loss = losses.nt_xent(z[:batch], z[batch:], temperature=TEMPERATURE)
            return loss, new_batch_stats

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = jax.tree.map(jnp.add, state["params"], updates)
        return {"params": params, "batch_stats": batch_stats, "opt_state": opt_state}, loss

    jitted = jax.jit(step, donate_argnums=0)
    device_views = jnp.asarray(views)
    holder = {"state": state}

    def run():
        holder["state"], loss = jitted(holder["state"], device_views)
        return jax.block_until_ready(loss)

    if return_jitted:  # for bench/profile_train_step.py
        return run, jitted, lambda: (holder["state"], device_views)
    return run


def make_torch_step(views: np.ndarray, channels_last: bool):
    import torch
    from torch_reference import SimCLRStep

    trainer = SimCLRStep(TEMPERATURE, LEARNING_RATE, channels_last=channels_last)
    torch_views = torch.from_numpy(np.ascontiguousarray(np.moveaxis(views, -1, 2)))
    return lambda: trainer.step(torch_views)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64, help="examples per step (x2 views)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--channels-last", action="store_true", help="torch in NHWC")
    parser.add_argument(
        "--contestants",
        nargs="+",
        default=["trainer", "step", "torch"],
        choices=["trainer", "step", "torch"],
    )
    parser.add_argument("--pause", type=float, default=0.2, help="seconds between steps")
    args = parser.parse_args()

    views = np.random.default_rng(0).uniform(size=(args.batch, 2, 32, 32, 3)).astype(np.float32)
    makers = {
        "trainer": lambda: make_trainer_step(args.batch, args.dtype, views),
        "step": lambda: make_minimal_step(args.batch, args.dtype, views),
        "torch": lambda: make_torch_step(views, args.channels_last),
    }
    steps, compile_seconds = {}, {}
    for name in args.contestants:
        steps[name] = makers[name]()
        start = time.perf_counter()
        for _ in range(args.warmup):
            steps[name]()
        compile_seconds[name] = time.perf_counter() - start
    times = {name: [] for name in steps}
    for _ in range(args.runs):
        for name, run in steps.items():
            time.sleep(args.pause)  # let the other framework's spinning threads settle
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)

    rate = {name: args.batch / statistics.median(t) for name, t in times.items()}
    parts = [
        f"{name} {rate[name]:.1f} img/s ({1e3 * statistics.median(times[name]):.0f} ms, "
        f"min {1e3 * min(times[name]):.0f})"
        for name in steps
    ]
    if "torch" in rate:
        parts += [
            f"ratio {name}/torch {rate[name] / rate['torch']:.2f}"
            for name in steps
            if name != "torch"
        ]
    print(
        f"SimCLR step, ResNet-18 small stem 1x, {args.batch}x2 32x32x3 {args.dtype}, "
        f"medians of {args.runs} interleaved runs: " + "; ".join(parts),
        flush=True,
    )
    print(
        "warm-up (incl. compile) seconds: "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in compile_seconds.items()),
        flush=True,
    )


if __name__ == "__main__":
    main()
