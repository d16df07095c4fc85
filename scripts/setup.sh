#!/usr/bin/env bash
# Set up vidpipe on a fresh machine: system packages (ffmpeg, espeak-ng, and chromium for the
# review page's browser tests) when missing,
# a virtual environment at .venv/ in the checkout, and vidpipe with its dev extras.
# Safe to run again: it only does what is missing.
#
#   bash scripts/setup.sh                  CPU: torch pinned to the CPU build (constraints-cpu.txt), extras dev,ray
#   bash scripts/setup.sh --extras ray     other extras (comma-separated; "" for none)
#   bash scripts/setup.sh --gpu            CUDA: PyPI's torch (CUDA-built) and ONNX Runtime's GPU build
set -euo pipefail
cd "$(dirname "$0")/.."

extras="dev,ray"
gpu=0
while [ $# -gt 0 ]; do
  case "$1" in
    --gpu) gpu=1 ;;
    --extras) extras="$2"; shift ;;
    *) echo "setup: unknown option $1 (--gpu, --extras LIST)" >&2; exit 2 ;;
  esac
  shift
done

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
pip=(.venv/bin/pip install -q --disable-pip-version-check)
if [ "$gpu" -eq 1 ]; then
  extras="gpu${extras:+,$extras}"
else
  # The exact CPU torch: 2.13.0 resolves to the CPU wheel here; vidpipe itself asks for a range.
  pip+=(-c scripts/constraints-cpu.txt)
fi
target=".${extras:+[$extras]}"
stamp=".venv/.vidpipe-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$(cat "$stamp")" != "$target gpu=$gpu" ]; then
  echo "setup: installing vidpipe$target into .venv"
  "${pip[@]}" -e "$target"
  if [ "$gpu" -eq 1 ]; then
    # insightface pulls in the CPU build of ONNX Runtime; both builds are the `onnxruntime`
    # module, so the GPU build goes in again over it.
    ort=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('onnxruntime-gpu'))")
    .venv/bin/pip uninstall -q -y onnxruntime
    "${pip[@]}" --force-reinstall --no-deps "onnxruntime-gpu==$ort"
  fi
  echo "$target gpu=$gpu" > "$stamp"
fi
echo "setup: ready (.venv/bin/vidpipe)"
