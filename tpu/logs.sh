#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The last lines of ~/sri-trace.log on every worker (TAIL_LINES=50 by default).
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
load_config
require PROJECT ZONE TPU_NAME
lines="${TAIL_LINES:-50}"
tpu_ssh all "echo \"== worker \$(hostname)\"; tail -n $lines $REMOTE_LOG"
