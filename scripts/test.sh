#!/usr/bin/env bash
# Set-up + tests: install into .venv (if needed), ruff, then the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
ruff check .  # lint (settings: pyproject.toml); a violation fails the run before any test
ruff format --check .  # the formatter's layout
exec python -m pytest -q "$@"
