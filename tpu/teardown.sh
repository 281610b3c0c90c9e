#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Delete the TPU VM / pod slice (and its queued resource). Collect the traces first when
# they are on the workers' local disks (gs:// output survives the teardown).
#
#   bash tpu/teardown.sh          # asks for confirmation
#   YES=1 bash tpu/teardown.sh
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
load_config
require PROJECT ZONE TPU_NAME
flags=(--project="$PROJECT" --zone="$ZONE" --quiet)

if [[ "${YES:-0}" != 1 ]]; then
  read -r -p "delete $TPU_NAME ($ACCELERATOR_TYPE in $ZONE)? [y/N] " answer
  [[ "$answer" == y || "$answer" == Y ]] || die "not deleted"
fi
if [[ "$QUEUED" == 1 ]]; then
  log "deleting queued resource $QR_NAME (and its node $TPU_NAME)"
  gcloud compute tpus queued-resources delete "$QR_NAME" "${flags[@]}" --force
else
  log "deleting TPU VM $TPU_NAME"
  gcloud compute tpus tpu-vm delete "$TPU_NAME" "${flags[@]}"
fi
log "deleted"
