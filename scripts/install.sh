#!/usr/bin/env bash
# Creates .venv (Python >= 3.11) and installs dcganlab with its test extras into it.
# Idempotent: skips pip when pyproject.toml has not changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: Python >= 3.11 needed ($PY)" >&2; exit 1; }
  "$PY" -m venv .venv
fi
stamp=.venv/.dcganlab-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi
