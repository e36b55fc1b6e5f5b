#!/usr/bin/env bash
# Quick start 1: install, train on the built-in digits, then predict a few held-out images in a fresh process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
run="runs/demo-$(date +%Y%m%d-%H%M%S)"
.venv/bin/dlkit train --out "$run"
echo
echo "predicting held-out samples saved in $run/samples:"
.venv/bin/dlkit predict "$run" "$run/samples" --topk 2
