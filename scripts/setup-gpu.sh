#!/usr/bin/env bash
# Set up .venv-gpu: the core requirements plus the heavy backends (torch,
# coqui-tts, spandrel), in one pip command so numpy stays below 2.
#
# Disk: torch's CUDA build and its libraries are about 5.5 GB. A new
# .venv-gpu starts as hard links to the packages already in .venv (same
# files, no second copy), so pip adds only the heavy ones; pip keeps no
# cache of what it fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
need_gb=${PERSONA_VIDEO_GPU_VENV_GB:-7}

site_of() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }

stamp=.venv-gpu/.requirements.sha
want=$(cat requirements.txt requirements-dev.txt requirements-gpu.txt | sha1sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

if [ ! -x .venv-gpu/bin/python ]; then
  free_gb=$(df -Pk . | awk 'NR==2 {print int($4 / 1048576)}')
  if [ "$free_gb" -lt "$need_gb" ]; then
    echo "setup-gpu: .venv-gpu needs about ${need_gb} GB of free disk and ${free_gb} GB is free here;" \
      "free some space (or set PERSONA_VIDEO_GPU_VENV_GB if you know it needs less) and run again" >&2
    exit 1
  fi
  if [ -x .venv/bin/python ]; then
    # pip itself comes with the core packages.
    "$PYTHON" -m venv --without-pip .venv-gpu
    core_site=$(site_of .venv)
    gpu_site=$(site_of .venv-gpu)
    # Hard links where the file system allows them, plain copies otherwise.
    cp -al "$core_site/." "$gpu_site/" 2>/dev/null || cp -a "$core_site/." "$gpu_site/"
  else
    "$PYTHON" -m venv .venv-gpu
  fi
fi
export PIP_NO_CACHE_DIR=1
.venv-gpu/bin/python -m pip install --quiet --upgrade pip
.venv-gpu/bin/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt -r requirements-gpu.txt
.venv-gpu/bin/python -m pip install --quiet --no-deps -e .
echo "$want" > "$stamp"
