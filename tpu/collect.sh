#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Copy the finished traces to this machine and check them.
#
#   bash tpu/collect.sh                 # into ./traces/<basename of OUT>
#   DEST=/data/run1 bash tpu/collect.sh
#
# gs:// output: one `gcloud storage rsync`. Output in a local folder on each worker: the
# shards are gathered from every worker (each shard exists on exactly one of them).
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
load_config
require OUT
dest="${DEST:-traces/$(basename "$OUT")}"
mkdir -p "$dest"

if is_gcs "$OUT"; then
  log "rsync $OUT -> $dest"
  gcloud storage rsync --recursive "$OUT" "$dest"
else
  require PROJECT ZONE TPU_NAME
  for ((i = 0; i < NUM_WORKERS; i++)); do
    tmp="$(mktemp -d)"
    log "worker $i: $OUT -> $dest"
    tpu_scp "$i" "$TPU_NAME:$OUT" "$tmp/"
    find "$tmp" -type f \( -name 'shard-*.parquet' -o -name 'plan.json' -o -name 'manifest.json' \) \
      -exec cp -n {} "$dest/" \;
    rm -rf "$tmp"
  done
fi

[[ -f "$dest/manifest.json" ]] || log "warning: no manifest.json: the run is not complete yet (bash tpu/watch.sh)"
if python3 -c 'import sri_jax' 2> /dev/null; then
  python3 - "$dest" <<'PY'
import json, sys
from pathlib import Path
from sri_jax.tracing import read_traces

d = Path(sys.argv[1])
rec = read_traces(d)
n = len(rec["prompt_id"])
dupes = n - len(set(rec["prompt_id"]))
man = json.loads((d / "manifest.json").read_text()) if (d / "manifest.json").exists() else {}
print(f"{d}: {n} records (manifest: {man.get('records', '?')}), {dupes} duplicate ids, "
      f"refusal rate {rec['refused'].mean():.3f}, sri {rec['sri'].shape}")
sys.exit(1 if dupes or (man and man["records"] != n) else 0)
PY
else
  log "install sri_jax here to verify the records (pip install -e .)"
fi
log "traces in $dest; e.g. sri-jax report $dest"
