#!/usr/bin/env bash
# Installs everything Pylon and its tests need on a fresh machine, idempotently:
#   .venv/            the project (editable) with the dev and dspy extras
#   .peers/           test peers in their own venvs (vLLM on CPU, LNbits), and a tiny model
# Re-running is cheap: each step is skipped when its stamp file is newer than its inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
if [ ! -f .venv/.stamp ] || [ pyproject.toml -nt .venv/.stamp ]; then
  .venv/bin/pip install -q -e '.[dev,dspy]'
  touch .venv/.stamp
fi

# Test peers (each script is idempotent and keeps to .peers/).
for peer in tests/peers/setup_*.sh; do
  [ -f "$peer" ] || continue
  bash "$peer"
done
