#!/usr/bin/env bash
# A TPU VM pod slice: install jaxcl on every worker, then run the same command
# on all of them (jax.distributed auto-detects the pod topology).
#   TPU_NAME=my-pod ZONE=us-central2-b launch/tpu_pod.sh configs/simclr_imagenet.py \
#       gs://my-bucket/runs/simclr_r50 --config.data_dir=gs://my-bucket/tensorflow_datasets
set -euo pipefail
config=${1:?usage: launch/tpu_pod.sh CONFIG WORKDIR [overrides...]}
workdir=${2:?usage: launch/tpu_pod.sh CONFIG WORKDIR [overrides...]}
shift 2
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
repo=${JAXCL_REPO:-https://github.com/jaxcl/jaxcl.git}
overrides=$(printf '%q ' "$@")
ssh() { gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"; }
ssh "test -d jaxcl || git clone $repo jaxcl; cd jaxcl && git pull --ff-only && pip install -q -e '.[tpu]'"
ssh "cd jaxcl && TF_CPP_MIN_LOG_LEVEL=2 python -m jaxcl.main --config=$config --workdir=$workdir $overrides"
