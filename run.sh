#!/usr/bin/env bash
# Set up (first time only) and open the app: http://127.0.0.1:7860
# Embedded defaults: no key, no GPU, no network needed.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/python app.py "$@"
