#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Zero to collected traces in one go: create, install, stage, launch, watch, collect.
# Leaves the slice running (bash tpu/teardown.sh when done). Each step is its own script
# and can be rerun alone; after a preemption rerun this script (or launch.sh): the create
# step is skipped when the slice exists and the trace resumes.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
load_config
require PROJECT ZONE TPU_NAME
here="$TPU_DIR"

if gcloud compute tpus tpu-vm describe "$TPU_NAME" --project="$PROJECT" --zone="$ZONE" \
  --format='value(state)' 2> /dev/null | grep -q READY; then
  log "$TPU_NAME exists and is READY; skipping create"
else
  bash "$here/create.sh"
fi
bash "$here/setup.sh"
bash "$here/stage.sh"
bash "$here/launch.sh" "$@"
bash "$here/watch.sh"
bash "$here/collect.sh"
