"""Forward+backward time of the CPU encoder preset at Fashion-MNIST size.

Times one jitted gradient step of `resnet18_cpu` (ResNet-18, 3x3 stem, width 0.25) on
a SimCLR-style batch: 256 images x 2 views = 512 images of 28x28x1, float32, BatchNorm
in training mode. Prints the median over several runs after compilation.

Run:
  .venv/bin/python bench/models_forward_backward.py [--runs 7] [--batch 256]
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcl import models
from jaxcl.models import functional


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18_cpu")
    parser.add_argument("--batch", type=int, default=256, help="images per view")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()

    dtype = jnp.dtype(args.dtype)
    model = models.create(args.model, in_channels=1, dtype=dtype, rngs=nnx.Rngs(0))
    graphdef, params, batch_stats = functional.split(model)
    images = jax.random.uniform(jax.random.key(1), (2 * args.batch, 28, 28, 1), jnp.float32)

    def loss_fn(params, batch_stats, images):
        features, batch_stats = functional.apply(graphdef, params, batch_stats, images, train=True)
        # Any scalar of the features: the cost is the encoder's forward and backward.
        return jnp.mean(jnp.square(features)), batch_stats

    step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))

    start = time.perf_counter()
    compiled = step.lower(params, batch_stats, images).compile()
    jax.block_until_ready(compiled(params, batch_stats, images))
    compile_seconds = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    gflops = float(cost.get("flops", float("nan"))) / 1e9

    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, batch_stats, images))
        times.append(time.perf_counter() - start)

    median_ms = 1e3 * statistics.median(times)
    device = jax.devices()[0]
    print(
        f"{args.model} forward+backward, {2 * args.batch}x28x28x1 {args.dtype}, train mode: "
        f"median {median_ms:.1f} ms over {args.runs} runs "
        f"({gflops:.1f} GFLOP per step per XLA, {gflops / median_ms * 1e3:.1f} GFLOP/s; "
        f"min {1e3 * min(times):.1f}, max {1e3 * max(times):.1f} ms; "
        f"compile+first {compile_seconds:.1f} s) on {device.platform} "
        f"({device.device_kind}, {jax.device_count()} device(s))"
    )


if __name__ == "__main__":
    main()
