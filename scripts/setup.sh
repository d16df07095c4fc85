#!/usr/bin/env bash
# Set up vidpipe on a fresh machine: system packages (ffmpeg, espeak-ng, and chromium for the
# review page's browser tests) when missing,
# a virtual environment at .venv/ in the checkout, and vidpipe with its dev extras.
# Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
# torch first and pinned: 2.13.0 resolves to the CPU wheel here; a range would pull CUDA builds.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/pip install -q --disable-pip-version-check torch==2.13.0
fi
if ! .venv/bin/python -c "import vidpipe, pytest, skimage, duckdb, playwright" >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.vidpipe-installed ]; then
  echo "setup: installing vidpipe and its dependencies into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
  touch .venv/.vidpipe-installed
fi
echo "setup: ready (.venv/bin/vidpipe)"
