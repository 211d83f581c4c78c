#!/usr/bin/env bash
# Set-up + main job: install into .venv, then `dvc repro` on params.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
git rev-parse --git-dir >/dev/null 2>&1 || git init -q   # DVC needs a git repository
dvc repro "$@"
