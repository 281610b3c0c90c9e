#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Put the weights, centers and prompt set on EVERY worker's local disk (~/sri-data/...).
# Every process reads only its own parameter slices, but from a local file: the loader
# memory-maps safetensors, which needs a local path (gs:// objects are copied first).
#
#   WEIGHTS=gs://bucket/LLaDA-8B-Instruct   an HF checkpoint folder on GCS (gcloud storage rsync)
#   WEIGHTS=GSAI-ML/LLaDA-8B-Instruct       a hub id (downloaded on each worker; gated models
#                                           such as meta-llama need HF_TOKEN set here)
#   CENTERS=gs://.../centers                from `sri-jax calibrate` (a folder)
#   PROMPTS=gs://.../set.jsonl | advbench   a file (copied) or a registered set name (as is)
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
load_config
require PROJECT ZONE TPU_NAME WEIGHTS CENTERS PROMPTS
not_local_only CENTERS
not_local_only PROMPTS
not_local_only WEIGHTS

data="$REMOTE_DATA"
steps=("set -euo pipefail" "mkdir -p $(remote_model) $data/centers $data/prompts")
if is_gcs "$WEIGHTS"; then
  steps+=("gcloud storage rsync --recursive $(quote "$WEIGHTS") $(remote_model)")
else
  token=""
  [[ -n "${HF_TOKEN:-}" ]] && token="HF_TOKEN=$(quote "$HF_TOKEN")"
  steps+=("$token $REMOTE_VENV/bin/hf download $(quote "$WEIGHTS") --local-dir $(remote_model) --include '*.json' '*.safetensors' '*.model' '*.tiktoken' '*.txt' '*.jinja'")
fi
if is_gcs "$CENTERS"; then
  steps+=("gcloud storage rsync --recursive $(quote "$CENTERS") $(remote_centers)")
fi
if is_gcs "$PROMPTS"; then
  steps+=("gcloud storage cp $(quote "$PROMPTS") $data/prompts/")
fi
steps+=("du -sh $(remote_model)" "ls $(remote_model)")

remote="$(printf '%s\n' "${steps[@]}")"
log "staging on all workers of $TPU_NAME"
tpu_ssh all "$remote"
log "done; next: bash tpu/launch.sh"
