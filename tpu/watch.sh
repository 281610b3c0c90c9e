#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Progress of the trace run in $OUT: finished shards out of the plan, the last log line of
# worker 0, and whether every worker's process is still alive. Returns when manifest.json
# (written once all shards are complete) appears, or when all workers have stopped.
#
#   bash tpu/watch.sh            # every 60 s
#   INTERVAL=10 bash tpu/watch.sh
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
load_config
require PROJECT ZONE TPU_NAME OUT
interval="${INTERVAL:-60}"

count_done() {
  if is_gcs "$OUT"; then
    gcloud storage ls "$OUT/shard-*.parquet" 2>/dev/null | wc -l
  else  # local folders on each worker: sum over workers
    local total=0 i n
    for ((i = 0; i < NUM_WORKERS; i++)); do
      n="$(tpu_ssh "$i" "ls $(quote "$OUT") 2>/dev/null | grep -c '^shard-.*\.parquet$' || true" 2>/dev/null | tail -n 1)"
      total=$((total + ${n:-0}))
    done
    echo "$total"
  fi
}

plan_shards() {
  local plan
  if is_gcs "$OUT"; then
    plan="$(gcloud storage cat "$OUT/plan.json" 2>/dev/null || true)"
  else
    plan="$(tpu_ssh 0 "cat $(quote "$OUT")/plan.json" 2>/dev/null || true)"
  fi
  python3 -c 'import json, sys
try:
    print(json.loads(sys.stdin.read())["shards"])
except Exception:
    print("?")' <<< "$plan"
}

has_manifest() {
  if is_gcs "$OUT"; then
    gcloud storage ls "$OUT/manifest.json" > /dev/null 2>&1
  else
    tpu_ssh 0 "test -f $(quote "$OUT")/manifest.json" > /dev/null 2>&1
  fi
}

# shellcheck disable=SC2016  # expanded on the worker, not here
alive_cmd='if [ -f sri-trace.pid ] && kill -0 "$(cat sri-trace.pid)" 2>/dev/null; then echo running; else echo stopped; fi'

while true; do
  total="$(plan_shards)"
  done_n="$(count_done)"
  alive="$(tpu_ssh all "$alive_cmd" 2>/dev/null | grep -c running || true)"
  last="$(tpu_ssh 0 "tail -n 1 $REMOTE_LOG" 2>/dev/null || true)"
  log "shards $done_n/$total, $alive/$NUM_WORKERS worker(s) running | ${last:0:160}"
  if has_manifest; then
    log "complete: $OUT/manifest.json written; next: bash tpu/collect.sh"
    exit 0
  fi
  if [[ "$alive" == 0 ]]; then
    log "no worker is running and the run is incomplete; see ~/$REMOTE_LOG on the workers"
    log "(bash tpu/logs.sh), then rerun bash tpu/launch.sh to resume"
    exit 1
  fi
  sleep "$interval"
done
