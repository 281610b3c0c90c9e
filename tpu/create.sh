#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Create the TPU VM / pod slice of configs/$CONFIG.env and wait until it is READY.
#
#   bash tpu/create.sh            # QUEUED=1 (settings): a queued resource, else a direct create
#
# A queued resource waits for capacity instead of failing (and is how spot pod slices are
# requested); SPOT=1 asks for spot capacity (cheaper; preemption is handled by rerunning
# tpu/launch.sh, which resumes).
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
load_config
require PROJECT ZONE TPU_NAME ACCELERATOR_TYPE RUNTIME_VERSION

flags=(--project="$PROJECT" --zone="$ZONE")
if [[ "$QUEUED" == 1 ]]; then
  extra=()
  [[ "$SPOT" == 1 ]] && extra+=(--spot)
  log "queued resource $QR_NAME: $ACCELERATOR_TYPE ($RUNTIME_VERSION) in $ZONE"
  gcloud compute tpus queued-resources create "$QR_NAME" "${flags[@]}" \
    --node-id="$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" \
    --runtime-version="$RUNTIME_VERSION" "${extra[@]}"
  while true; do
    state="$(gcloud compute tpus queued-resources describe "$QR_NAME" "${flags[@]}" \
      --format='value(state.state)')"
    log "queued resource state: $state"
    case "$state" in
      ACTIVE) break ;;
      FAILED|SUSPENDED) die "queued resource $QR_NAME is $state; see: gcloud compute tpus queued-resources describe $QR_NAME --zone=$ZONE" ;;
    esac
    sleep 30
  done
else
  extra=()
  [[ "$SPOT" == 1 ]] && extra+=(--spot)
  log "TPU VM $TPU_NAME: $ACCELERATOR_TYPE ($RUNTIME_VERSION) in $ZONE"
  gcloud compute tpus tpu-vm create "$TPU_NAME" "${flags[@]}" \
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" "${extra[@]}"
fi

until [[ "$(gcloud compute tpus tpu-vm describe "$TPU_NAME" "${flags[@]}" \
  --format='value(state)')" == READY ]]; do
  log "waiting for $TPU_NAME to be READY"
  sleep 15
done
log "$TPU_NAME is READY ($NUM_WORKERS worker(s)); next: bash tpu/setup.sh"
