#!/usr/bin/env bash
# A TPU VM pod slice: install one pinned commit of jaxcl on every worker, then
# run the same command on all of them (jax.distributed auto-detects the pod
# topology: one process per worker, every chip of the slice in one data mesh).
#
#   TPU_NAME=my-pod ZONE=us-central2-b JAXCL_REPO=https://github.com/you/jaxcl.git \
#     launch/tpu_pod.sh configs/simclr_imagenet.py gs://my-bucket/runs/simclr_r50 \
#       --config.data_dir=gs://my-bucket/tensorflow_datasets
#
# JAXCL_REPO: the repository the workers clone (default: this checkout's
#   'origin' remote). JAXCL_REF: the tag or commit they install (default: the
#   commit this script is launched from, which must be pushed there), so every
#   worker runs the same code however often the branch moves.
# WORKDIR may be a gs:// bucket path (every output goes there through
#   etils.epath; orbax writes checkpoints to it from every worker) or a mount
#   that every worker sees.
set -euo pipefail
config=${1:?usage: launch/tpu_pod.sh CONFIG WORKDIR [overrides...]}
workdir=${2:?usage: launch/tpu_pod.sh CONFIG WORKDIR [overrides...]}
shift 2
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
here=$(cd "$(dirname "$0")/.." && pwd)
repo=${JAXCL_REPO:-$(git -C "$here" remote get-url origin 2>/dev/null || true)}
ref=${JAXCL_REF:-$(git -C "$here" rev-parse HEAD)}
if [ -z "$repo" ]; then
  echo "tpu_pod.sh: set JAXCL_REPO to the git URL the workers should clone" >&2
  exit 2
fi
overrides=$(printf '%q ' "$@")
ssh() { gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"; }
ssh "set -e; test -d jaxcl || git clone --quiet $(printf '%q' "$repo") jaxcl; cd jaxcl
  git fetch --quiet --tags origin; git checkout --quiet --detach $(printf '%q' "$ref")
  python3 -m pip install -q -e '.[tpu]'"
ssh "cd jaxcl && TF_CPP_MIN_LOG_LEVEL=2 python3 -m jaxcl.main --config=$config --workdir=$workdir $overrides"
