#!/usr/bin/env bash
# Set up and run the test suite. Tests on real media read ../shared and skip when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
