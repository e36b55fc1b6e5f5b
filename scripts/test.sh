#!/usr/bin/env bash
# Quick start 2: install with test extras, check the layers contract (pyproject.toml's [tool.importlinter]: no upward
# import, no cycle), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh test
.venv/bin/lint-imports --no-logo --no-cache
exec .venv/bin/python -m pytest -q "$@"
