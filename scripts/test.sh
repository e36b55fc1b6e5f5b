#!/usr/bin/env bash
# Quick start 2: install with test extras and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh test
exec .venv/bin/python -m pytest -q "$@"
