#!/usr/bin/env bash
# Create or refresh .venv, then run the demo against the embedded Batch API emulator
# on 127.0.0.1 (no API key, no network). Extra arguments go to `autobatcher demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[emulator,trio]"
exec .venv/bin/autobatcher demo "$@"
