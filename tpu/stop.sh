#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Stop the trace on every worker (by the pid launch.sh recorded). Finished shards stay;
# rerunning tpu/launch.sh resumes from them.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
load_config
require PROJECT ZONE TPU_NAME
# shellcheck disable=SC2016  # expanded on the worker, not here
tpu_ssh all 'if [ -f sri-trace.pid ] && kill -0 "$(cat sri-trace.pid)" 2>/dev/null; then kill "$(cat sri-trace.pid)"; echo "$(hostname): stopped"; else echo "$(hostname): not running"; fi'
