#!/usr/bin/env bash
# Set up .venv-gpu: the core requirements plus the heavy backends (torch,
# coqui-tts, spandrel), in one pip command so numpy stays below 2.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv-gpu/bin/python ]; then
  "$PYTHON" -m venv .venv-gpu
fi
stamp=.venv-gpu/.requirements.sha
want=$(cat requirements.txt requirements-dev.txt requirements-gpu.txt | sha1sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv-gpu/bin/python -m pip install --quiet --upgrade pip
  .venv-gpu/bin/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt -r requirements-gpu.txt
  .venv-gpu/bin/python -m pip install --quiet --no-deps -e .
  echo "$want" > "$stamp"
fi
