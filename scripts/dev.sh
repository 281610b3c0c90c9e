#!/usr/bin/env bash
# One-stop set-up: creates .venv (once), installs sri_jax, then runs
#   bash scripts/dev.sh demo [ARGS...]   the SRI demo on the embedded default model (runtime install)
#   bash scripts/dev.sh test [ARGS...]   the test suite (adds the test extras; non-zero on failure)
#   bash scripts/dev.sh run CMD...       any command inside the environment (runtime install)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
cmd=${1:-demo}
shift || true
# The demo needs the runtime packages only (no PyTorch); the tests add the
# oracles. Re-install only when pyproject.toml changed since the last install of that set.
target=".[gguf]"
[ "$cmd" = test ] && target=".[test]"
stamp=.venv/.sri_jax_installed${target#.}
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e "$target"
  touch "$stamp"
fi
case "$cmd" in
  demo) exec .venv/bin/sri-jax demo "$@" ;;
  test) exec .venv/bin/python -m pytest -q "$@" ;;
  run)  exec .venv/bin/"$@" ;;
  *) echo "usage: bash scripts/dev.sh {demo|test|run CMD} [ARGS...]" >&2; exit 2 ;;
esac
