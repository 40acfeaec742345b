#!/usr/bin/env bash
# Builds the real Lightning test peer: LNbits 1.6.2 (FakeWallet funding source) in its own venv.
#   .peers/lnbits-venv/   lnbits pins old pydantic/sqlalchemy/httpx, so it never shares the project venv
# bitstring<5: the bolt11 package LNbits uses breaks on import with bitstring 5.
# Idempotent: a stamp file marks a finished install; a re-run with nothing changed takes a second.
# See docs/TEST_PEERS.md "Lightning".
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PEERS="$ROOT/.peers"
VENV="$PEERS/lnbits-venv"
LNBITS_VERSION="1.6.2"
STAMP="$VENV/.stamp-lnbits-$LNBITS_VERSION"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
mkdir -p "$PEERS"
# quiet pip: no version check; setuptools/pip warnings off (they reach build backends via the env)
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1 PYTHONWARNINGS=ignore

log() { echo "[setup_lnbits] $*"; }
pip_q() { "$VENV/bin/pip" "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }

if [ -f "$STAMP" ]; then
  log "lnbits venv up to date"
  exit 0
fi
t0=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
log "installing lnbits==$LNBITS_VERSION into $VENV"
pip_q install -q --upgrade pip
pip_q install -q "lnbits==$LNBITS_VERSION" "bitstring<5"
# importing lnbits writes data/.lnbits_auth_key under the working directory: keep it inside .peers/
(cd "$PEERS" && LNBITS_DATA_FOLDER="$PEERS/lnbits-import-check" "$VENV/bin/python" -c "import lnbits, bolt11")
[ -x "$VENV/bin/lnbits" ] || { log "no lnbits console script in $VENV/bin"; exit 1; }
touch "$STAMP"
log "lnbits venv ready in $(( $(date +%s) - t0 )) s"
