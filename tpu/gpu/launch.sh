#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Multi-GPU node: trace with one process driving every local GPU (mesh and batch from
# tpu/configs/$CONFIG.env, default gpu-8xh100). Run ON the GPU node, in the foreground
# (wrap it in tmux/screen or nohup for long runs). Extra `sri-jax trace` flags after `--`.
#
#   MODEL=llada-8b-instruct WEIGHTS=/data/LLaDA-8B-Instruct CENTERS=/data/centers \
#   PROMPTS=advbench OUT=/data/traces/llada-advbench bash tpu/gpu/launch.sh
#
# Rerunning the same command resumes (finished shards are skipped). Several nodes: see
# tpu/gpu/slurm-trace.sh.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONFIG="${CONFIG:-gpu-8xh100}"
# shellcheck source=../common.sh
source "$here/../common.sh"
load_config
require MODEL WEIGHTS CENTERS PROMPTS OUT

extra=()
if [[ "${1:-}" == "--" ]]; then
  shift
  extra=("$@")
fi
venv="${VENV:-$REPO_DIR/.venv-gpu}"
mesh_data="${MESH_DATA:-$(model_setting "$MODEL" MESH_DATA)}"
mesh_model="${MESH_MODEL:-$(model_setting "$MODEL" MESH_MODEL)}"
batch="${BATCH:-$(model_setting "$MODEL" BATCH)}"

# Let XLA take most of the GPU memory up front (it preallocates 75% by default).
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}"
log "mesh data=$mesh_data model=$mesh_model, batch $batch"
exec "$venv/bin/sri-jax" trace --mesh-data "$mesh_data" --mesh-model "$mesh_model" \
  --batch-size "$batch" --model "$WEIGHTS" --dtype bfloat16 --centers "$CENTERS" \
  --prompts "$PROMPTS" --out "$OUT" "${extra[@]}"
