#!/usr/bin/env bash
# Create (or reuse) .venv at the repo root and install dlkit into it, editable, with the given extras.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>/dev/null || true
# torch/torchvision are pinned in pyproject.toml; on this machine pip takes them from the local wheel cache.
.venv/bin/python -m pip install -q -e ".${extras:+[$extras]}" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import dlkit, torch, torchvision" || { echo "install failed" >&2; exit 1; }
