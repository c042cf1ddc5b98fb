"""NT-Xent forward+backward at large batch: dense logits vs blockwise, time and peak memory.

For each global batch B (2B views of dimension d, one device) it times the
jitted ``jax.value_and_grad`` of ``jaxcl.losses.nt_xent`` with respect to both
views, once with the dense (2B x 2B) logits (``block_size=0``) and once
blockwise (``block_size=--block``: ``jaxcl.losses.nt_xent_blockwise``, on the
tiled log-sum-exp of ``jaxcl.tiled_logsumexp``), and prints one line per batch:
medians over ``--runs`` runs after a warm-up run, the ratio blockwise/dense of
the medians, and the peak memory of each.

Every (implementation, batch) runs in a fresh subprocess, so that its peak
resident set size (``ru_maxrss``, the whole process: Python, JAX runtime,
inputs, XLA's scratch buffers) is its own; on a GPU (``--platform cuda``) the
peak is the device's ``peak_bytes_in_use``. XLA's compile-time estimate of its
scratch (``memory_analysis().temp_size_in_bytes``) is printed too. A dense
configuration whose estimate exceeds ``--dense-limit-gb`` is compiled but not
run, and reported as skipped with the memory it would need.

Run (CPU; the full sweep takes about 15 minutes on 2 cores):
  nice -n 15 .venv/bin/python bench/loss_at_scale.py
  nice -n 15 .venv/bin/python bench/loss_at_scale.py --sizes 1024 4096 --runs 7
  python bench/loss_at_scale.py --platform cuda --dense-limit-gb 60   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

GIB = 2**30


def _child(implementation: str, batch: int, dim: int, block: int, runs: int, limit_gb: float):
    """Measures one configuration; prints one JSON line."""
    import jax
    import jax.numpy as jnp

    from jaxcl import losses

    block_size = 0 if implementation == "dense" else block
    z1, z2 = jax.random.normal(jax.random.key(0), (2, batch, dim), jnp.float32)
    jax.block_until_ready((z1, z2))
    device = jax.devices()[0]

    def loss(z1, z2):
        return losses.nt_xent(z1, z2, temperature=0.1, block_size=block_size)

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    start = time.perf_counter()
    compiled = step.lower(z1, z2).compile()
    compile_seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    xla_bytes = (
        memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes
    )
    result = {
        "implementation": implementation,
        "batch": batch,
        "xla_temp_bytes": memory.temp_size_in_bytes,
        "xla_total_bytes": xla_bytes,
        "compile_seconds": compile_seconds,
        "device": f"{device.platform} {device.device_kind}",
    }
    if implementation == "dense" and xla_bytes > limit_gb * GIB:
        result["skipped"] = True
        print(json.dumps(result), flush=True)
        return
    value, _ = jax.block_until_ready(compiled(z1, z2))  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(compiled(z1, z2))
        times.append(time.perf_counter() - start)
    result.update(
        loss=float(value),
        times=times,
        median_seconds=statistics.median(times),
        peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    )
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        result["peak_device_bytes"] = stats["peak_bytes_in_use"]
    print(json.dumps(result), flush=True)


def _measure(implementation, batch, args) -> dict:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        implementation,
        "--sizes",
        str(batch),
        "--dim",
        str(args.dim),
        "--block",
        str(args.block),
        "--runs",
        str(args.runs),
        "--dense-limit-gb",
        str(args.dense_limit_gb),
    ]
    env = {**os.environ, "JAX_PLATFORMS": args.platform}
    completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1:] or ["(no message)"]}
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _describe(result: dict) -> str:
    if "error" in result:
        return f"failed ({result['error'][0]})"
    if result.get("skipped"):
        return f"skipped (would need {result['xla_total_bytes'] / GIB:.1f} GB per XLA)"
    if "peak_device_bytes" in result:
        memory = f"peak device memory {result['peak_device_bytes'] / GIB:.2f} GB"
    else:
        memory = f"peak RSS {result['peak_rss_bytes'] / GIB:.2f} GB"
    return (
        f"median {result['median_seconds'] * 1e3:,.1f} ms "
        f"(min {min(result['times']) * 1e3:,.1f}), {memory} "
        f"(XLA scratch {result['xla_temp_bytes'] / GIB:.2f} GB)"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384, 32768]
    )
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--block", type=int, default=4096, help="blockwise tile side")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--dense-limit-gb",
        type=float,
        default=10.0,
        help="skip dense configurations that XLA says need more",
    )
    parser.add_argument("--platform", default="cpu", help="JAX_PLATFORMS of the measurements")
    parser.add_argument("--child", choices=["dense", "blockwise"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        _child(args.child, args.sizes[0], args.dim, args.block, args.runs, args.dense_limit_gb)
        return

    print(
        f"NT-Xent value_and_grad wrt both views, d {args.dim}, float32, one {args.platform} "
        f"device ({os.cpu_count()} CPU cores), medians of {args.runs} runs after a warm-up; "
        f"blockwise tile {args.block}",
        flush=True,
    )
    for batch in args.sizes:
        dense = _measure("dense", batch, args)
        blocked = _measure("blockwise", batch, args)
        ratio = ""
        if "median_seconds" in dense and "median_seconds" in blocked:
            ratio = (
                f"; ratio blockwise/dense {blocked['median_seconds'] / dense['median_seconds']:.2f}"
                f" (loss difference {abs(blocked['loss'] - dense['loss']):.1e})"
            )
        print(
            f"global batch {batch:>6,} ({2 * batch:,} views): "
            f"dense {_describe(dense)}; blockwise {_describe(blocked)}{ratio}",
            flush=True,
        )


if __name__ == "__main__":
    main()
