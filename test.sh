#!/usr/bin/env bash
# Set up and run every test: lint, the core suite (real voices, face mesh,
# ffmpeg, Debian's chromium and redis-server), then the heavy backends on random-weight
# checkpoints in .venv-gpu. `./test.sh --core` skips the heavy part.
set -euo pipefail
cd "$(dirname "$0")"
core_only=0
[ "${1:-}" = "--core" ] && core_only=1

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
  else
    echo "chromium is missing: run 'sudo apt-get install -y chromium' (the browser test needs it)" >&2
  fi
fi
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server is missing: run 'sudo apt-get install -y redis-server' (the broker tests need it)" >&2
  fi
fi

bash scripts/setup.sh
.venv/bin/ruff check persona_video app.py tests
.venv/bin/ruff format --check persona_video app.py tests
.venv/bin/hadolint Dockerfile
.venv/bin/python -m pytest -m "not heavy" -q

if [ "$core_only" = "0" ]; then
  bash scripts/setup-gpu.sh
  .venv-gpu/bin/python -m pytest -m heavy -q tests/heavy
fi
