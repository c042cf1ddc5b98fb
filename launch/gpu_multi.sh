#!/usr/bin/env bash
# One host, all its GPUs, one process per GPU (jax.distributed over localhost).
# A single process driving all GPUs (launch/local.sh) works too; one process per
# GPU mirrors the multi-node layout and keeps each input pipeline on its own core set.
#   launch/gpu_multi.sh configs/simclr_cifar10.py runs/simclr_cifar10 [overrides...]
# NUM_GPUS=N uses the first N GPUs; COORDINATOR_PORT picks process 0's port.
set -euo pipefail
config=${1:?usage: launch/gpu_multi.sh CONFIG WORKDIR [overrides...]}
workdir=${2:?usage: launch/gpu_multi.sh CONFIG WORKDIR [overrides...]}
shift 2
num_gpus=${NUM_GPUS:-$(nvidia-smi --list-gpus | wc -l)}
port=${COORDINATOR_PORT:-12345}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
pids=()
wait_all() {
  status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
}
# Background jobs of a script ignore Ctrl-C: pass INT and TERM on to every
# process (each saves a checkpoint and exits) rather than leave them running.
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true; wait_all; exit 143' INT TERM
for ((i = 0; i < num_gpus; i++)); do
  CUDA_VISIBLE_DEVICES=$i python -m jaxcl.main --config="$config" --workdir="$workdir" \
    --coordinator_address="localhost:$port" --num_processes="$num_gpus" --process_id="$i" \
    "$@" &
  pids+=($!)
done
wait_all
exit $status
