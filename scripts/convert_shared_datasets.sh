#!/usr/bin/env bash
# Convert every dataset in ../shared/datasets into benchmarks/work/datasets/<name>/ (git-ignored: research-only data
# must never be committed). Each folder gets train.yml (+ dev.yml, test.yml), domain.yml, report.json and
# summary.txt. Point `rasa train nlu --nlu` at train.yml, not at the folder (it also holds test.yml).
#   scripts/convert_shared_datasets.sh                 # all datasets
#   scripts/convert_shared_datasets.sh cais smp2017    # some of them
#   DATASETS=/path/to/datasets OUT=/tmp/benchmarks scripts/convert_shared_datasets.sh
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATASETS="${DATASETS:-$ROOT/../shared/datasets}"
OUT="${OUT:-$ROOT/benchmarks/work/datasets}"

if [ -x "$ROOT/.venv/bin/nlu-bert" ]; then
  CLI=("$ROOT/.venv/bin/nlu-bert")
else
  CLI=("$ROOT/.venv/bin/python" -m nlu_bert.cli)
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ ! -d "$DATASETS" ]; then
  echo "error: $DATASETS not found; set DATASETS=/path/to/shared/datasets" >&2
  exit 1
fi

# name | format | inputs and options (relative to $DATASETS)
read -r -d '' TABLE <<'EOF' || true
smp2017|smp2017|smp2017_ecdt_task1/raw/Task1data
smp2019|smp2019|smp2019_ecdt_task1/raw
cais|cais|cais/raw
nlpcc2018|nlpcc2018|nlpcc2018_task4_slu/raw --test-fraction 0.2 --seed 42
crosswoz|crosswoz|crosswoz/raw
massive_zh_cn|massive|massive_zh_cn_intent/raw/amazon_massive_intent_zh_cn.jsonl --label-map massive_zh_cn_intent/label_map_zh_to_massive_intent.json
telemarketing_intent_cn|jsonl|telemarketing_intent_cn/raw/telemarketing_intent_cn.jsonl
EOF

wanted=" $* "
converted=0
while IFS='|' read -r name format args; do
  if [ $# -gt 0 ] && [[ "$wanted" != *" $name "* ]]; then continue; fi
  # inputs and option values that are paths are relative to $DATASETS
  resolved=()
  for arg in $args; do
    if [[ "$arg" == -* || "$arg" =~ ^[0-9.]+$ ]]; then resolved+=("$arg"); else resolved+=("$DATASETS/$arg"); fi
  done
  echo "== $name"
  rm -rf "${OUT:?}/$name"
  mkdir -p "$OUT/$name"
  "${CLI[@]}" convert "$format" "${resolved[@]}" -o "$OUT/$name" \
    --report "$OUT/$name/report.json" --domain "$OUT/$name/domain.yml" | tee "$OUT/$name/summary.txt"
  converted=$((converted + 1))
done <<< "$TABLE"

if [ "$converted" -eq 0 ]; then
  echo "error: no dataset named: $*" >&2
  exit 1
fi
echo "converted $converted dataset(s) into $OUT"
