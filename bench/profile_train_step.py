"""Where XLA:CPU spends the time of the SimCLR train step of bench/train_step.py.

Traces ``--steps`` steps of the hand-written jaxcl step (``train_step.py``'s
``step`` contestant) with ``jax.profiler``, reads the trace (XPlane protobuf,
parsed with the copy of its schema that TensorFlow ships) and adds up the time
of every XLA thunk, summed over the threads that ran it (a thunk that runs
multi-threaded inside, as Eigen's convolutions, counts its calling thread's
time only). Each thunk is put in a
category from the optimised HLO of the step: convolutions (forward, gradient
of the input, gradient of the kernel), matrix products, layout copies and
transposes, and the remaining fused element-wise and reduction kernels
(BatchNorm, ReLU, the loss, LARS). With ``--torch`` it also prints PyTorch's
profile of the reference step by operator (self CPU time).

Run (set XLA_FLAGS to profile another XLA:CPU configuration):
  nice -n 15 .venv/bin/python bench/profile_train_step.py [--steps 2] [--torch]
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import tempfile

import jax
import numpy as np
from train_step import make_minimal_step, make_torch_step


def _parse_hlo(text: str):
    """Instruction name -> (output shape, opcode, called computation, op_name)."""
    instructions, computations, current = {}, collections.defaultdict(list), None
    for line in text.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header and "=" not in line.split("{")[0]:
            current = header.group(1)
            continue
        match = re.match(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ([\w\-]+)\(", line)
        if not match:
            continue
        name, shape, opcode = match.groups()
        calls = re.search(r"calls=%?([\w.\-]+)", line)
        op_name = re.search(r'op_name="([^"]*)"', line)
        instructions[name] = (
            shape,
            opcode,
            calls.group(1) if calls else None,
            op_name.group(1) if op_name else "",
        )
        computations[current].append(name)
    return instructions, computations


def _category(name, instructions, computations, num_images):
    shape, opcode, calls, op_name = instructions.get(name, ("", "?", None, ""))
    inner = [instructions[n] for n in computations.get(calls, [])] if calls else []
    for inner_shape, inner_opcode, _, inner_op_name in inner:
        if inner_opcode == "convolution":
            shape, opcode, op_name = inner_shape, inner_opcode, inner_op_name or op_name
            break
        if inner_opcode == "dot":
            opcode = "dot"
    if opcode == "convolution":
        batch = re.match(r"\w+\[(\d+)", shape)
        if batch and int(batch.group(1)) != num_images:
            return "convolution: kernel gradient"
        if "transpose(" in op_name:
            return "convolution: input gradient"
        return "convolution: forward"
    if opcode == "dot":
        return "matrix products (dense layers, loss)"
    if "transpose" in name or opcode in ("copy", "transpose") or name.startswith("copy"):
        return "layout copies and transposes"
    return "other fused kernels (BatchNorm, ReLU, loss, LARS)"


def profile_jax(batch: int, steps: int):
    views = np.random.default_rng(0).uniform(size=(batch, 2, 32, 32, 3)).astype(np.float32)
    run, jitted, args = make_minimal_step(batch, "float32", views, return_jitted=True)
    run()
    run()
    hlo = jitted.lower(*args()).compile().as_text()
    instructions, computations = _parse_hlo(hlo)
    directory = tempfile.mkdtemp()
    with jax.profiler.trace(directory):
        for _ in range(steps):
            run()
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True)[0]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.Counter()
    by_thunk = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if line.name == "python":
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if "::" in name:  # executor and thread-pool events around the thunks
                    continue
                seconds = event.duration_ps / 1e12 / steps
                totals[_category(name, instructions, computations, 2 * batch)] += seconds
                by_thunk[name] += seconds
    total = sum(totals.values())
    flags = os.environ.get("XLA_FLAGS", "") or "(none)"
    print(f"jaxcl step, XLA_FLAGS={flags}: {total:.1f} thread-seconds of XLA thunks per step")
    for category, seconds in totals.most_common():
        print(f"  {100 * seconds / total:5.1f}%  {seconds:6.2f} s  {category}")
    print("  largest thunks: " + ", ".join(f"{n} {s:.2f} s" for n, s in by_thunk.most_common(6)))


def profile_torch(batch: int, steps: int):
    import torch

    views = np.random.default_rng(0).uniform(size=(batch, 2, 32, 32, 3)).astype(np.float32)
    run = make_torch_step(views, channels_last=False)
    run()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            run()
    events = profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in events) / 1e6 / steps
    print(f"torch step: {total:.1f} s of self CPU time per step (by operator)")
    for event in sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]:
        seconds = event.self_cpu_time_total / 1e6 / steps
        print(f"  {100 * seconds / total:5.1f}%  {seconds:6.2f} s  {event.key}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--torch", action="store_true", help="also profile the torch reference")
    args = parser.parse_args()
    profile_jax(args.batch, args.steps)
    if args.torch:
        profile_torch(args.batch, args.steps)


if __name__ == "__main__":
    main()
