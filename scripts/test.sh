#!/usr/bin/env bash
# The test command: ruff (lint and format check, about a second), then the test suite (no network needed; tiny
# models are built by the tests). Arguments go to pytest, e.g. `scripts/test.sh tests/bert -k native`.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TF_CPP_MIN_LOG_LEVEL=3
status=0
.venv/bin/ruff check --quiet --output-format concise . || status=1
.venv/bin/ruff format --check --quiet --output-format concise . || status=1
if [ "$status" != 0 ]; then
  echo "ruff: fix the files above (.venv/bin/ruff check --fix . && .venv/bin/ruff format .)" >&2
fi
.venv/bin/python -m pytest -ra -q "$@" || status=$?
exit "$status"
