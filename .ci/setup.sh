#!/usr/bin/env bash
# Installs everything Pylon and its tests need on a fresh machine, idempotently:
#   .venv/            the project (editable) with the dev and dspy extras
#   .peers/           test peers in their own venvs (vLLM on CPU, LNbits), and a tiny model
# Re-running is cheap: each step is skipped when its stamp file is newer than its inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

# One line per step. pip is quiet (-q, no version check) and the known noise is dropped:
# the "Location ... is ignored" warning this machine's partial local indexes cause for every
# package, and setuptools' editable-install advice (PYTHONWARNINGS reaches the build backend).
# Errors still show, and a failing pip still fails the step (pipefail).
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1 PYTHONWARNINGS=ignore
log() { echo "[setup] $*"; }
pip_q() { "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  pip_q .venv/bin/pip install -q --upgrade pip
  log ".venv created"
fi
if [ ! -f .venv/.stamp ] || [ pyproject.toml -nt .venv/.stamp ]; then
  t0=$(date +%s)
  pip_q .venv/bin/pip install -q -e '.[dev,dspy]'
  touch .venv/.stamp
  log ".venv: pylon with the dev and dspy extras installed in $(( $(date +%s) - t0 )) s"
else
  log ".venv up to date"
fi

# Test peers (each script is idempotent and keeps to .peers/).
for peer in tests/peers/setup_*.sh; do
  [ -f "$peer" ] || continue
  bash "$peer"
done
