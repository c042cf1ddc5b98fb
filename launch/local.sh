#!/usr/bin/env bash
# One machine, one process: the CPU, or every GPU of this host as one mesh.
#   launch/local.sh configs/simclr_fashion_mnist.py runs/simclr_fm [--config.key=value ...]
set -euo pipefail
config=${1:?usage: launch/local.sh CONFIG WORKDIR [overrides...]}
workdir=${2:?usage: launch/local.sh CONFIG WORKDIR [overrides...]}
shift 2
# TensorFlow only feeds data; keep its logs quiet and JAX's memory preallocation modest.
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec python -m jaxcl.main --config="$config" --workdir="$workdir" "$@"
