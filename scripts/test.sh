#!/usr/bin/env bash
# Run the test suite (no network needed; tiny models are built by the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TF_CPP_MIN_LOG_LEVEL=3
exec .venv/bin/python -m pytest -ra -q "$@"
