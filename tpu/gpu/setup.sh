#!/usr/bin/env bash
# Multi-GPU node: install sri_jax with jax[cuda12] (and gcsfs for gs:// paths) into
# ./.venv-gpu of this checkout. Run ON the GPU node.
#
#   bash tpu/gpu/setup.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${VENV:-$repo/.venv-gpu}"

python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet --upgrade "jax[cuda12]" gcsfs
"$venv/bin/pip" install --quiet -e "$repo"
"$venv/bin/python" -c 'import jax; print(jax.device_count(), "devices:", jax.devices()[0].device_kind)'
echo "installed in $venv; next: bash tpu/gpu/launch.sh"
