#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Install sri_jax with jax[tpu] (and gcsfs for gs:// paths) into ~/sri-venv on EVERY worker.
#
#   bash tpu/setup.sh                     # builds a wheel of this checkout and installs it
#   SRI_JAX_SPEC='sri_jax @ git+https://...' bash tpu/setup.sh   # or any pip requirement
#
# Ends with a check that every worker sees its TPU chips.
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
load_config
require PROJECT ZONE TPU_NAME

if [[ -n "${SRI_JAX_SPEC:-}" ]]; then
  spec="$SRI_JAX_SPEC"
else
  dist="$(mktemp -d)"
  log "building a wheel of $REPO_DIR"
  python3 -m pip wheel --quiet --no-deps --wheel-dir "$dist" "$REPO_DIR"
  wheels=("$dist"/sri_jax-*.whl)
  [[ -f "${wheels[0]}" ]] || die "no wheel was built in $dist"
  log "copying $(basename "${wheels[0]}") to all workers"
  tpu_scp all "${wheels[0]}" "$TPU_NAME:"
  spec="./$(basename "${wheels[0]}")"
fi

remote="set -euo pipefail
python3 -m venv $REMOTE_VENV
$REMOTE_VENV/bin/pip install --quiet --upgrade pip
$REMOTE_VENV/bin/pip install --quiet --upgrade 'jax[tpu]' gcsfs
$REMOTE_VENV/bin/pip install --quiet $(quote "$spec")
$REMOTE_VENV/bin/python -c 'import jax, sri_jax; print(\"worker\", jax.process_index(), jax.local_device_count(), \"local chips\", jax.devices()[0].device_kind, \"sri_jax\", sri_jax.__version__)'"
log "installing on all workers of $TPU_NAME"
tpu_ssh all "$remote"
log "done; next: bash tpu/stage.sh"
