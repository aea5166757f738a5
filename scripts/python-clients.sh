#!/usr/bin/env bash
# Installs the real Nakadi clients the interop tests drive (pyNakadi, clin) into a
# virtualenv at $1 (default target/interop-venv). Idempotent; pinned versions.
set -euo pipefail
venv="${1:-target/interop-venv}"
if [ -x "$venv/bin/clin" ] && "$venv/bin/python" -c 'import pyNakadi' 2>/dev/null; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check pyNakadi==0.2.14.8 clin==1.8.0
