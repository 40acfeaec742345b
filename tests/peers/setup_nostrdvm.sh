#!/usr/bin/env bash
# Builds the foreign NIP-90 test peer: nostrdvm (PyPI nostr-dvm 1.1.8, the main Python DVM
# framework) in its own venv, with the litellm its kind-5050 TextGenerationLLMLite task imports.
#   .peers/nostrdvm-venv/              nostr-dvm 1.1.8 + litellm 1.12.3 (+ httpx, which that
#                                      litellm uses but does not declare)
#   .peers/nostrdvm-venv/tiktoken/     tiktoken's cl100k_base file: litellm 1.12.3 downloads it at
#                                      import time, which cannot work offline; litellm 1.53.1's
#                                      wheel ships that exact file (named by the sha1 of its URL),
#                                      so it is extracted from that wheel (never installed) and
#                                      TIKTOKEN_CACHE_DIR points at it (tests/peers/nostrdvm_peer.py)
# Idempotent: a stamp marks a finished install; offline after the first run.
# See docs/TEST_PEERS.md "Other NIP-90 software".
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PEERS="$ROOT/.peers"
VENV="$PEERS/nostrdvm-venv"
VERSION="1.1.8"
STAMP="$VENV/.stamp-nostrdvm-$VERSION"
CL100K="9b5ad71b2ce5302211f9c61530b329a4922fc6a4"   # sha1 of tiktoken's cl100k_base URL
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
mkdir -p "$PEERS"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1 PYTHONWARNINGS=ignore
log() { echo "[setup_nostrdvm] $*"; }
pip_q() { "$VENV/bin/pip" "$@" 2>&1 | { grep -v -e "is ignored: it is neither a file nor a directory" \
  -e "dependency resolver does not currently" -e "requires zipp==" || true; }; }

if [ -f "$STAMP" ]; then
  log "nostrdvm venv up to date"
  exit 0
fi
t0=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
log "installing nostr-dvm==$VERSION and litellm==1.12.3 into $VENV"
pip_q install -q "nostr-dvm==$VERSION" httpx "litellm==1.12.3"
if [ ! -f "$VENV/tiktoken/$CL100K" ]; then
  DL=$(mktemp -d)
  pip_q download -q --no-deps "litellm==1.53.1" -d "$DL"
  mkdir -p "$VENV/tiktoken"
  "$VENV/bin/python" - "$DL" "$VENV/tiktoken" "$CL100K" <<'PY'
import pathlib, sys, zipfile
src, dst, name = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
wheel = next(src.glob("litellm-*.whl"))
with zipfile.ZipFile(wheel) as z:
    (dst / name).write_bytes(z.read(f"litellm/llms/tokenizers/{name}"))
PY
  rm -rf "$DL"
fi
(cd "$PEERS" && TIKTOKEN_CACHE_DIR="$VENV/tiktoken" "$VENV/bin/python" -c \
  "import litellm, nostr_dvm.tasks.textgeneration_llmlite, nostr_sdk")
touch "$STAMP"
log "nostrdvm venv ready in $(( $(date +%s) - t0 )) s"
