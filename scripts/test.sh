#!/usr/bin/env bash
# Set-up + tests: install into .venv (if needed), then the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
exec python -m pytest -q "$@"
