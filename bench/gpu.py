"""GPU benchmark: SimCLR ResNet-50 at 224 px in bfloat16, jaxcl against PyTorch, the
input pipeline in both augmentation modes, and the model FLOPs utilisation.

One script for a lent GPU, under 8 minutes on one device:

(a) **Train step**, ``configs/simclr_imagenet.py`` (ResNet-50, SimCLR v2 head,
    NT-Xent, LARS) on placed random views, compute in bfloat16, at each global
    batch of ``--batches`` (256 and 512): jaxcl's ``Trainer.train_step`` against
    ``bench/torch_reference.py`` (the same network and loss in eager PyTorch,
    ``channels_last`` and ``torch.autocast(bfloat16)``) on the same GPU.
(b) **End to end**: the real training loop's input (``jaxcl.train.train_batches``:
    tf.data, the transfer, the prefetch) and step, on a folder of synthetic
    JPEGs (``dataset='image_folder'``), with ``augment_on_device`` false (the
    whole SimCLR chain on the host) and true (the host crops, resizes and flips
    uint8; the rest runs in the step): examples/s and the fraction of the time
    the step waited for input. Where the host keeps up, the two rates are those
    of the step alone.
(c) **MFU**: XLA's FLOP count of the lowered step (``Lowered.cost_analysis``,
    the program before the GPU compiler hands its convolutions to cuDNN, whose
    calls the compiled program's count leaves out) per second over the device's
    peak (``--peak_tflops``, default an H100/H200 SXM's 989 dense bfloat16
    TFLOP/s).
(d) **On-device augmentation alone**: milliseconds of
    ``jaxcl.data.device_augment.finish_views`` for the views of one global batch
    of ``--e2e_batch`` examples, whole and with one operation left out, to show
    which operation costs what.

Run it on the GPU machine from the repository root::

    python bench/gpu.py --out /tmp/gpu.json

and on a CPU at toy sizes (ResNet-tiny, 32 px, what tests/test_bench.py runs)::

    python bench/gpu.py --tiny

Prints a Markdown table per part and one result line (JSON) last.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcl import xla_defaults
from jaxcl.data.device_augment import finish_views
from jaxcl.data.pipeline import view_configs
from jaxcl.train import Trainer, train_batches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H200_BF16_DENSE_TFLOPS = 989.0


def recipe(args, batch, *, dataset="synthetic", dataset_options=None, on_device="false"):
    """``configs/simclr_imagenet.py`` at this benchmark's sizes (the recipe otherwise)."""
    spec = importlib.util.spec_from_file_location(
        "recipe", os.path.join(ROOT, "configs", "simclr_imagenet.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    source = args.image_size + args.image_size // 7  # 256 for 224, as ImageNet's short side
    config.dataset = dataset
    config.dataset_options = dataset_options or {
        "image_shape": (source, source, 3), "num_classes": 1000, "num_examples": 4 * batch,
    }  # fmt: skip
    config.image_size = args.image_size
    config.global_batch_size = batch
    config.compute_dtype = args.dtype
    config.augment_on_device = on_device
    config.num_steps = 10_000
    config.warmup_epochs = 0.0
    config.progress_bar = False
    config.eval.run_at_end = False
    if args.tiny:
        config.model, config.model_options = "resnet_tiny", {"zero_init_residual": False}
        config.projection_dim, config.projection_hidden_dim = 16, 32
    return config


def _timed(run, steps, warmup):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def jaxcl_step(args, batch):
    """Median seconds of the jitted step, and XLA's FLOPs of one step."""
    trainer = Trainer(recipe(args, batch))
    mesh = trainer.mesh
    rng = np.random.default_rng(0)
    views = rng.uniform(size=(batch, 2, args.image_size, args.image_size, 3)).astype(np.float32)
    sharding = NamedSharding(mesh, P("data"))
    with jax.set_mesh(mesh):
        state = trainer.initial_state()
        placed = {
            "views": jax.device_put(views, sharding),
            "label": jax.device_put(np.zeros(batch, np.int32), sharding),
        }
        lowered = trainer.train_step.lower(state, placed)
        lowered.compile()
    # The FLOPs of the program as written: on a GPU the compiled program's count
    # misses the convolutions, which become cuDNN calls that XLA does not cost.
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    holder = {"state": state}

    def run():
        with jax.set_mesh(mesh):
            holder["state"], metrics = trainer.train_step(holder["state"], placed)
        jax.block_until_ready(metrics["loss"])

    # jax 0.11's GPU backend costs no lowered program (None): count on the CPU.
    flops = float(cost["flops"]) if cost and "flops" in cost else flops_on_cpu(args, batch)
    return _timed(run, args.steps, args.warmup), flops


def lowered_flops(args, batch):
    """XLA's FLOP count of the lowered train step at ``batch``, traced on abstract inputs."""
    trainer = Trainer(recipe(args, batch))
    sharding = NamedSharding(trainer.mesh, P("data"))
    shape = (batch, 2, args.image_size, args.image_size, 3)
    with jax.set_mesh(trainer.mesh):
        inputs = {
            "views": jax.ShapeDtypeStruct(shape, np.float32, sharding=sharding),
            "label": jax.ShapeDtypeStruct((batch,), np.int32, sharding=sharding),
        }
        cost = trainer.train_step.lower(trainer.initial_state(), inputs).cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return float(cost["flops"])


def flops_on_cpu(args, batch):
    """`lowered_flops` in a CPU-only subprocess (the program, and so its FLOPs, are the same)."""
    command = [sys.executable, os.path.abspath(__file__), "--count_flops", str(batch)]
    command += ["--image_size", str(args.image_size), "--dtype", args.dtype]
    command += ["--tiny"] if args.tiny else []
    environment = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(command, capture_output=True, text=True, env=environment, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def torch_step(args, batch):
    """Median seconds of the PyTorch reference step, or the reason it did not run."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_reference import SimCLRStep

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.tiny:
        return None, "no CUDA device for torch"
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else None
    trainer = SimCLRStep(
        0.1, 0.3, channels_last=True, encoder="resnet18_small" if args.tiny else "resnet50",
        device=device, autocast_dtype=dtype,
    )  # fmt: skip
    views = torch.rand(batch, 2, 3, args.image_size, args.image_size, device=device)

    def run():
        trainer.step(views)
        if device == "cuda":
            torch.cuda.synchronize()

    return _timed(run, args.steps, args.warmup), f"torch {torch.__version__} on {device}"


def write_jpegs(root, count, side):
    """``count`` smooth random RGB JPEGs of ``side`` pixels in two classes, under ``root``."""
    from jaxcl.data._tf import tf

    rng = np.random.default_rng(0)
    for index in range(count):
        folder = os.path.join(root, "train", f"class_{index % 2}")
        os.makedirs(folder, exist_ok=True)
        coarse = rng.uniform(0, 255, (side // 16 + 1, side // 16 + 1, 3)).astype(np.float32)
        image = tf.image.resize(coarse[None], (side, side), "bicubic")[0]
        image = tf.cast(
            tf.clip_by_value(image + rng.normal(0, 12, (side, side, 3)), 0, 255), tf.uint8
        )
        tf.io.write_file(
            os.path.join(folder, f"{index:05d}.jpg"), tf.io.encode_jpeg(image, quality=90)
        )


def end_to_end(args, root, on_device):
    """Examples/s of the training loop's input and step, and its input-wait fraction."""
    config = recipe(
        args,
        args.e2e_batch,
        dataset="image_folder",
        dataset_options={"root": root},
        on_device=on_device,
    )
    trainer = Trainer(config)
    batches = train_batches(trainer)
    state = trainer.initial_state()
    try:
        with jax.set_mesh(trainer.mesh):
            for _ in range(args.warmup):
                state, metrics = trainer.train_step(state, next(batches))
            jax.block_until_ready(metrics["loss"])
            waited, start = 0.0, time.perf_counter()
            for _ in range(args.e2e_steps):
                wait_start = time.perf_counter()
                batch = next(batches)
                waited += time.perf_counter() - wait_start
                state, metrics = trainer.train_step(state, batch)
            jax.block_until_ready(metrics["loss"])
            elapsed = time.perf_counter() - start
    finally:
        batches.close()
    return args.e2e_batch * args.e2e_steps / elapsed, waited / elapsed


def main(argv=None):
    """Runs parts (a) to (c) and prints their tables and one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--steps", type=int, default=10, help="timed steps of part (a)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--e2e_batch", type=int, default=256)
    parser.add_argument("--e2e_steps", type=int, default=20)
    parser.add_argument("--jpegs", type=int, default=2048, help="images in the JPEG folder")
    parser.add_argument("--peak_tflops", type=float, default=H200_BF16_DENSE_TFLOPS)
    parser.add_argument("--tiny", action="store_true", help="toy sizes, for a CPU")
    parser.add_argument("--out", default="", help="also write the result JSON here")
    parser.add_argument("--count_flops", type=int, default=0, help="only print this batch's FLOPs")
    args = parser.parse_args(argv)
    if args.count_flops:
        print(lowered_flops(args, args.count_flops))
        return
    if args.tiny:
        args.batches, args.image_size, args.dtype = [8], 32, "float32"
        args.steps, args.warmup, args.e2e_batch, args.e2e_steps, args.jpegs = 2, 1, 8, 2, 32
    if jax.default_backend() == "cpu":
        xla_defaults.apply_cpu_defaults()
    device = jax.devices()[0]
    cores = len(os.sched_getaffinity(0))
    result = {
        "benchmark": "gpu",
        "device": f"{device.platform} {device.device_kind}",
        "devices": jax.device_count(),
        "host_cores": cores,
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "image_size": args.image_size,
        "dtype": args.dtype,
        "train_step": [],
        "end_to_end": [],
        "finish_views": [],
        "errors": [],
    }
    print(f"{result['device']} x{result['devices']}, {cores} host cores, jax {jax.__version__}")
    print("\n| global batch | jaxcl ex/s | torch ex/s | jaxcl / torch | TFLOP/step | MFU |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    try:
        # PyTorch first, its cached memory handed back before JAX grows its own pool:
        # at batch 512 the two would not fit on one GPU side by side.
        torch_results = {batch: _torch_or_reason(args, batch) for batch in args.batches}
        for batch in args.batches:
            _train_step_row(args, batch, torch_results[batch], result)
        _end_to_end_rows(args, result)
        _augmentation_rows(args, result)
    except Exception as error:  # kept in the result: a lent device's minutes are few
        result["errors"].append(f"{type(error).__name__}: {error}")
        raise
    finally:
        print(_write(result, args.out))


def _write(result, out):
    """The result line, also written to ``out`` (after each part, so a run cut short keeps it)."""
    line = json.dumps(result)
    if out:
        with open(out, "w") as file:
            file.write(line + "\n")
    return line


def _torch_or_reason(args, batch):
    """``torch_step``'s result, or (None, the error) when it failed (e.g. out of memory)."""
    try:
        return torch_step(args, batch)
    except Exception as error:  # the jaxcl figures still count
        return None, f"torch failed: {type(error).__name__}: {str(error)[:300]}"
    finally:
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()


def _train_step_row(args, batch, torch_result, result):
    """Part (a) and (c) at one global batch: a table row and a result entry."""
    seconds, flops = jaxcl_step(args, batch)
    torch_seconds, torch_note = torch_result
    row = {
        "global_batch": batch,
        "jaxcl_examples_per_s": batch / seconds,
        "jaxcl_step_s": seconds,
        "flops_per_step": flops,
        "mfu": flops / seconds / (args.peak_tflops * 1e12),
        "torch_examples_per_s": batch / torch_seconds if torch_seconds else None,
        "torch": torch_note,
    }
    result["train_step"].append(row)
    _write(result, args.out)
    torch_rate = f"{row['torch_examples_per_s']:.0f}" if torch_seconds else torch_note
    # At toy sizes torch runs its ResNet-18, not jaxcl's toy network: no ratio.
    ratio = f"{torch_seconds / seconds:.2f}" if torch_seconds and not args.tiny else ""
    print(
        f"| {batch} | {row['jaxcl_examples_per_s']:.0f} | {torch_rate} | {ratio} | "
        f"{flops / 1e12:.2f} | {100 * row['mfu']:.1f}% |",
        flush=True,
    )


def _end_to_end_rows(args, result):
    """Part (b): the loop on a JPEG folder in both augmentation modes."""
    with tempfile.TemporaryDirectory(prefix="jaxcl-gpu-bench-") as root:
        side = args.image_size + args.image_size // 7
        write_jpegs(root, args.jpegs, side)
        print(f"\nend to end on {args.jpegs} JPEGs of {side} px, global batch {args.e2e_batch}:")
        print("| augment_on_device | examples/s | input wait |")
        print("| --- | ---: | ---: |")
        for on_device in ("false", "true"):
            rate, wait = end_to_end(args, root, on_device)
            result["end_to_end"].append(
                {
                    "augment_on_device": on_device,
                    "examples_per_s": rate,
                    "input_wait_fraction": wait,
                }
            )
            _write(result, args.out)
            print(f"| {on_device} | {rate:.0f} | {100 * wait:.0f}% |", flush=True)


def _augmentation_rows(args, result):
    """Part (d): ``finish_views`` on one global batch's views, whole and without each op."""
    configs = view_configs("simclr_imagenet", 2)
    rng = np.random.default_rng(0)
    shape = (args.e2e_batch, len(configs), args.image_size, args.image_size, 3)
    views = jax.device_put(rng.integers(0, 256, shape, dtype=np.uint8))
    keys = jax.device_put(
        rng.integers(0, 2**32, (*shape[:2], 2), dtype=np.uint64).astype(np.uint32)
    )
    variants = {
        "whole": {},
        "without colour jitter": {"jitter_prob": 0.0},
        "jitter in a fixed order": {"jitter_random_order": False},
        "without blur": {"blur_prob": 0.0},
        "nothing (uint8 to float only)": {
            "jitter_prob": 0.0, "grayscale_prob": 0.0, "blur_prob": 0.0,
        },
    }  # fmt: skip
    print(f"\nfinish_views on {shape[0] * shape[1]} views of {args.image_size} px:")
    print("| variant | ms |")
    print("| --- | ---: |")
    for name, changes in variants.items():
        changed = tuple(dataclasses.replace(config, **changes) for config in configs)
        finish = jax.jit(lambda v, k, c=changed: finish_views(v, k, c))
        seconds = _timed(
            lambda f=finish: jax.block_until_ready(f(views, keys)), args.steps, args.warmup
        )
        result["finish_views"].append({"variant": name, "ms": 1e3 * seconds})
        _write(result, args.out)
        print(f"| {name} | {1e3 * seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
