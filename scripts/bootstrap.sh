#!/usr/bin/env bash
# Create .venv with Python 3.10 and install nlu-bert with everything it needs (idempotent).
#   scripts/bootstrap.sh            # package with its `train` extra + dev/test tools
#   NLU_BERT_PYTHON=/path/to/python3.10 scripts/bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  if [ -n "${NLU_BERT_PYTHON:-}" ]; then echo "$NLU_BERT_PYTHON"; return; fi
  for candidate in "$HOME/.pyenv/versions/3.10.13/bin/python3.10" python3.10; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    PYENV_VERSION=3.10.13 pyenv which python3.10 2>/dev/null && return
  fi
  echo "error: Python 3.10 not found (Rasa 3.6 runs on 3.8-3.10). Install it (e.g. 'pyenv install 3.10.13') or set NLU_BERT_PYTHON." >&2
  exit 1
}

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
  PY=$(find_python)
  echo "creating .venv with $("$PY" --version)"
  rm -rf .venv
  "$PY" -m venv .venv
fi

.venv/bin/python -m pip install --quiet -c constraints.txt --upgrade "pip<25" "wheel" "setuptools<70.4"
# constraints.txt holds the versions resolved together with rasa==3.6.21; pip keeps its download cache.
# everything: the serving base, the `train` extra (torch, transformers, onnx) and the dev tools
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[train,dev]"
.venv/bin/python -m pip check
echo "nlu-bert installed in .venv ($(.venv/bin/python -c 'import nlu_bert; print(nlu_bert.__version__)'))"
