"""Time to first step, steady-state step time and host syncs of a training config.

Runs the pieces of ``jaxcl.train.train_and_evaluate`` one by one on a config
file (default: the README's main job, ``configs/simclr_fashion_mnist.py``) and
times each:

* ``import``: ``import jax`` and jaxcl, from process start;
* ``trainer``: ``Trainer(config)``, which initialises the network;
* ``initial_state``: the optimizer state, replicated on the mesh;
* ``first_batch``: the first batch of the real input pipeline (preparing the
  data set if needed, building the tf.data graph);
* ``compile``: lowering and compiling the train step (``jit(...).lower().compile()``);
* ``first_step``: running that first compiled step;
* ``time_to_first_step``: everything above, process start to first result.

Then ``--steps`` steps run as the training loop runs them (the prefetching
pipeline, the step, the device-side finiteness fold) in windows of ``--window``
steps; each window ends with one ``block_until_ready``, like a log step.
Reported: the median seconds per step over windows, its images/s, and the
fraction of time spent waiting for input.

Host synchronisation check: the windows run under
``jax.transfer_guard_device_to_host("disallow")``, so any implicit
device-to-host copy in a step (``float(loss)``, ``if finite:``...) raises; and
the time Python takes to *dispatch* a window is compared with the time the
window takes to finish. A loop without per-step syncs dispatches a whole
window long before it completes (dispatch/complete well below 1).

    python bench/first_step.py                                # the main job's config
    XLA_FLAGS=... python bench/first_step.py --steps 30
    python bench/first_step.py --compilation_cache_dir=/tmp/cache   # twice: cold, then warm
    python bench/first_step.py --config configs/simclr_cifar10.py:smoke --set model=resnet_tiny

Prints one result line (JSON) last.
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402


def load_config(spec: str, overrides: list[str]):
    """``path[:arg]`` of a config file, with ``key=value`` overrides (values as JSON)."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg) if arg else module.get_config()
    for item in overrides:
        key, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/simclr_fashion_mnist.py")
    parser.add_argument("--set", action="append", default=[], help="key=value override")
    parser.add_argument("--steps", type=int, default=40, help="steady-state steps after the first")
    parser.add_argument("--window", type=int, default=5, help="steps per timed window")
    parser.add_argument(
        "--compilation_cache_dir", default="", help="JAX's persistent cache (default: off)"
    )
    args = parser.parse_args()

    import jax

    from jaxcl import xla_defaults

    xla_defaults.apply_cpu_defaults()  # as the CLI does, before JAX starts
    xla_defaults.enable_compilation_cache(args.compilation_cache_dir)

    from jaxcl.stopping import NonfiniteMonitor
    from jaxcl.train import Trainer, train_batches

    timings = {"import": time.perf_counter() - PROCESS_START}
    config = load_config(args.config, args.set)

    def timed(name, fn):
        start = time.perf_counter()
        result = fn()
        timings[name] = time.perf_counter() - start
        print(f"{name}: {timings[name]:.2f} s", file=sys.stderr, flush=True)
        return result

    trainer = timed("trainer", lambda: Trainer(config))
    mesh = trainer.mesh
    with jax.set_mesh(mesh):
        state = timed("initial_state", trainer.initial_state)

        def first_batch():
            batches = train_batches(trainer)
            return batches, next(batches)

        batches, batch = timed("first_batch", first_batch)
        compiled = timed("compile", lambda: trainer.train_step.lower(state, batch).compile())

        def first():
            new_state, metrics = compiled(state, batch)
            jax.block_until_ready(metrics["loss"])
            return new_state

        state = timed("first_step", first)
        timings["time_to_first_step"] = time.perf_counter() - PROCESS_START

        monitor = NonfiniteMonitor()
        step_times, dispatch_ratios, wait_fractions = [], [], []
        windows = max(1, args.steps // args.window)
        with jax.transfer_guard_device_to_host("disallow"):
            for _ in range(windows):
                start = time.perf_counter()
                waited = 0.0
                for _ in range(args.window):
                    wait_start = time.perf_counter()
                    batch = next(batches)
                    waited += time.perf_counter() - wait_start
                    state, metrics = trainer.train_step(state, batch)
                    monitor.update(metrics["finite"], 0)
                dispatched = time.perf_counter() - start
                jax.block_until_ready(metrics["loss"])
                elapsed = time.perf_counter() - start
                step_times.append(elapsed / args.window)
                dispatch_ratios.append(dispatched / elapsed)
                wait_fractions.append(waited / elapsed)
        batches.close()
    first_bad, _, _ = monitor.read()

    step_time = statistics.median(step_times)
    result = {
        "benchmark": "first_step",
        "config": args.config,
        "overrides": args.set,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "compilation_cache_dir": args.compilation_cache_dir,
        "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
        **{f"{name}_s": round(value, 3) for name, value in timings.items()},
        "steady_step_s_median": round(step_time, 4),
        "steady_step_s_min": round(min(step_times), 4),
        "images_per_sec": round(config.global_batch_size / step_time, 1),
        "input_wait_fraction_median": round(statistics.median(wait_fractions), 4),
        "dispatch_over_complete_median": round(statistics.median(dispatch_ratios), 3),
        "implicit_device_to_host_transfers": 0,  # the guard would have raised
        "windows": windows,
        "window_steps": args.window,
        "nonfinite": first_bad is not None,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
