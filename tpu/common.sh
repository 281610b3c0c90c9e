#!/usr/bin/env bash
# Shared settings and helpers of the tpu/ scripts. Sourced, never run on its own.
#
# Settings come from tpu/settings.env (copy settings.example.env) or the environment
# (SRI_TPU_SETTINGS=/path/to/file picks another file); the accelerator comes from
# tpu/configs/$CONFIG.env.
# shellcheck shell=bash
# shellcheck disable=SC2034  # variables here are used by the scripts that source this file

set -euo pipefail

TPU_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$TPU_DIR/.." && pwd)"
SETTINGS="${SRI_TPU_SETTINGS:-$TPU_DIR/settings.env}"
if [[ -f "$SETTINGS" ]]; then
  # shellcheck source=/dev/null
  source "$SETTINGS"
fi

# Remote layout on every worker (paths relative to the login user's home directory).
REMOTE_VENV="sri-venv"
REMOTE_LOG="sri-trace.log"
REMOTE_PID="sri-trace.pid"
REMOTE_DATA="sri-data"

die() {
  echo "error: $*" >&2
  exit 1
}

log() {
  echo "[$(date +%H:%M:%S)] $*" >&2
}

# require VAR... : fail with a hint unless every variable is set and non-empty.
require() {
  local v
  for v in "$@"; do
    [[ -n "${!v:-}" ]] || die "set $v (in $SETTINGS or the environment; see tpu/README.md)"
  done
}

# load_config: source tpu/configs/$CONFIG.env and fill defaults (ZONE, TPU_NAME, QR_NAME).
load_config() {
  require CONFIG
  local f="$TPU_DIR/configs/$CONFIG.env"
  if [[ ! -f "$f" ]]; then
    local have=()
    local c
    for c in "$TPU_DIR"/configs/*.env; do
      have+=("$(basename "$c" .env)")
    done
    die "no configuration $f; available: ${have[*]}"
  fi
  # shellcheck source=/dev/null
  source "$f"
  ZONE="${ZONE:-${DEFAULT_ZONE:-}}"
  TPU_NAME="${TPU_NAME:-sri-jax-$CONFIG}"
  QR_NAME="${QR_NAME:-$TPU_NAME-qr}"
  QUEUED="${QUEUED:-0}"
  SPOT="${SPOT:-0}"
}

# model_key NAME: the variable prefix of a model in the configs (LLADA_8B, LLAMA_31_8B).
model_key() {
  case "$1" in
    llada-8b*|llada-1.5*|*LLaDA-8B*|*LLaDA-1.5*) echo "LLADA_8B" ;;
    llama-3.1-8b*|*Llama-3.1-8B*) echo "LLAMA_31_8B" ;;
    *) echo "" ;;
  esac
}

# model_setting NAME FIELD: e.g. model_setting llada-8b-instruct MESH_DATA -> 4 (on v5e-8).
model_setting() {
  local key
  key="$(model_key "$1")"
  [[ -n "$key" ]] || die "no mesh/batch settings for model '$1' in configs/$CONFIG.env; set MESH_DATA, MESH_MODEL and BATCH yourself"
  local var="${key}_$2"
  [[ -n "${!var:-}" ]] || die "configs/$CONFIG.env does not define $var"
  echo "${!var}"
}

gcloud_tpu_flags() {
  printf '%s\n' "--project=$PROJECT" "--zone=$ZONE"
}

# tpu_ssh WORKER COMMAND: run COMMAND (a string, executed by the remote login shell in the
# home directory) on one worker index or on "all" of them at once.
tpu_ssh() {
  local flags
  mapfile -t flags < <(gcloud_tpu_flags)
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${flags[@]}" --worker="$1" --command="$2"
}

# tpu_scp WORKER SRC DEST: gcloud scp to/from workers (prefix remote paths with "$TPU_NAME:").
tpu_scp() {
  local flags
  mapfile -t flags < <(gcloud_tpu_flags)
  gcloud compute tpus tpu-vm scp "${flags[@]}" --worker="$1" --recurse "$2" "$3"
}

is_gcs() {
  [[ "$1" == gs://* ]]
}

# quote ARGS...: one shell-quoted string (safe to embed in a remote command).
quote() {
  printf '%q ' "$@"
}

# Where stage.sh puts things on the workers (relative to the home directory).
remote_model() {
  echo "$REMOTE_DATA/weights/model"
}

remote_centers() {
  if is_gcs "$CENTERS"; then echo "$REMOTE_DATA/centers"; else echo "$CENTERS"; fi
}

remote_prompts() {
  if is_gcs "$PROMPTS"; then echo "$REMOTE_DATA/prompts/$(basename "$PROMPTS")"; else echo "$PROMPTS"; fi
}

# not_local_only VAR: fail when VAR names a file/folder on THIS machine (workers cannot see it).
not_local_only() {
  local v="$1"
  if [[ -e "${!v}" ]] && ! is_gcs "${!v}"; then
    die "$v=${!v} is a path on this machine; upload it first (gcloud storage cp --recursive ${!v} gs://BUCKET/...) and set $v to the gs:// URL"
  fi
}
