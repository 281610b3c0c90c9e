#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Start `sri-jax trace --distributed` on EVERY worker (in the background; logs in
# ~/sri-trace.log, pid in ~/sri-trace.pid), with the mesh and batch size of
# configs/$CONFIG.env for $MODEL. Extra `sri-jax trace` flags go after `--`:
#
#   bash tpu/launch.sh                          # the settings' MODEL/PROMPTS/OUT
#   bash tpu/launch.sh -- --attack gcg --limit 100000
#   MESH_DATA=8 MESH_MODEL=1 BATCH=256 bash tpu/launch.sh   # override the config
#
# Every process joins one jax.distributed group (coordinator and ids come from the TPU
# metadata), all chips of the slice form one ("data", "model") mesh, and shard i of the
# output is written by process i % processes. Rerunning the same command after a
# preemption resumes: finished shards are skipped.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
load_config
require PROJECT ZONE TPU_NAME MODEL CENTERS PROMPTS OUT

extra=()
if [[ "${1:-}" == "--" ]]; then
  shift
  extra=("$@")
fi
mesh_data="${MESH_DATA:-$(model_setting "$MODEL" MESH_DATA)}"
mesh_model="${MESH_MODEL:-$(model_setting "$MODEL" MESH_MODEL)}"
batch="${BATCH:-$(model_setting "$MODEL" BATCH)}"

args=("$REMOTE_VENV/bin/sri-jax" trace --distributed
  --mesh-data "$mesh_data" --mesh-model "$mesh_model" --batch-size "$batch"
  --model "$(remote_model)" --dtype bfloat16 --centers "$(remote_centers)"
  --prompts "$(remote_prompts)" --out "$OUT" --no-progress "${extra[@]}")

# Refuse to start a second copy on a worker that is still tracing.
remote="set -euo pipefail
if [ -f $REMOTE_PID ] && kill -0 \"\$(cat $REMOTE_PID)\" 2>/dev/null; then
  echo \"worker \$(hostname): a trace is still running (pid \$(cat $REMOTE_PID)); bash tpu/stop.sh first\" >&2
  exit 1
fi
export HF_HUB_OFFLINE=1
setsid nohup $(quote "${args[@]}") >> $REMOTE_LOG 2>&1 < /dev/null &
echo \$! > $REMOTE_PID
echo \"worker \$(hostname): started pid \$(cat $REMOTE_PID)\""
log "launching on all $NUM_WORKERS worker(s): mesh data=$mesh_data model=$mesh_model, batch $batch"
log "command: ${args[*]}"
tpu_ssh all "$remote"
log "running; watch with: bash tpu/watch.sh"
