#!/usr/bin/env bash
# A TPU VM pod slice: install jaxcl on every worker, then run the same command
# on all of them (jax.distributed auto-detects the pod topology: one process per
# worker, every chip of the slice in one data mesh).
#   TPU_NAME=my-pod ZONE=us-central2-b launch/tpu_pod.sh configs/simclr_imagenet.py \
#       /mnt/shared/runs/simclr_r50 --config.data_dir=gs://my-bucket/tensorflow_datasets
# WORKDIR must be one directory that every worker sees (an NFS or Filestore mount),
# because each worker writes its own shards of every checkpoint there.
# jaxcl writes the workdir with local file APIs, so a gs:// workdir does not work;
# data_dir may be gs:// (TFDS reads it through tf.io.gfile).
set -euo pipefail
config=${1:?usage: launch/tpu_pod.sh CONFIG WORKDIR [overrides...]}
workdir=${2:?usage: launch/tpu_pod.sh CONFIG WORKDIR [overrides...]}
shift 2
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
repo=${JAXCL_REPO:-https://github.com/jaxcl/jaxcl.git}
overrides=$(printf '%q ' "$@")
ssh() { gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"; }
ssh "test -d jaxcl || git clone $repo jaxcl; cd jaxcl && git pull --ff-only && python3 -m pip install -q -e '.[tpu]'"
ssh "cd jaxcl && TF_CPP_MIN_LOG_LEVEL=2 python3 -m jaxcl.main --config=$config --workdir=$workdir $overrides"
