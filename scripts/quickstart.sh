#!/usr/bin/env bash
# The sample assistant in one command (`make run`): install if needed, create the shop database,
# pick the profile (hub models or offline `scratch`), train if needed, start the action server
# and `rasa run --enable-api --cors "*"`, print the web chat URL. Ctrl-C stops everything.
#
#   scripts/quickstart.sh [run|shell|train]
#     run    (default) serve the REST API and the web chat page
#     shell  talk to the assistant in the terminal (`rasa shell`), action server included
#     train  train the chosen profile's model and stop
#
# Environment: RASA_PORT (5005), ACTIONS_PORT (5055), NLU_BERT_PROFILE=hub|offline (force a
# profile), SHOP_DB_URL (SQLAlchemy URL of the shop database; default rasa_project/shop.db),
# HF_ENDPOINT / HF_HUB_OFFLINE (where the hub models come from).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-run}
MODE=${MODE#--}                        # `--shell` works too
RASA_PORT=${RASA_PORT:-5005}
ACTIONS_PORT=${ACTIONS_PORT:-5055}
PY=$ROOT/.venv/bin/python
STATE=$ROOT/.rasa/quickstart          # logs and generated files (git-ignored)

say() { printf '\033[1;32m[quickstart]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[quickstart]\033[0m %s\n' "$*" >&2; exit 1; }

case "$MODE" in run|shell|train) ;; *) die "usage: scripts/quickstart.sh [run|shell|train]";; esac

# 1. Install (only when the virtualenv is missing or incomplete).
if ! "$PY" -c "import rasa, rasa_sdk, jieba, torch, transformers, sqlalchemy" >/dev/null 2>&1; then
  say "installing (scripts/bootstrap.sh) ..."
  bash scripts/bootstrap.sh
fi

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export RASA_TELEMETRY_ENABLED=${RASA_TELEMETRY_ENABLED:-false}
export SQLALCHEMY_SILENCE_UBER_WARNING=1 TOKENIZERS_PARALLELISM=false TF_CPP_MIN_LOG_LEVEL=3
# Serving memory (README "Memory"): glibc returns freed blocks over 128 kB to the OS at once, and oneDNN keeps
# few compiled kernels (GPT-2 prompts of every length would otherwise each keep theirs).
export MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-131072} MALLOC_TRIM_THRESHOLD_=${MALLOC_TRIM_THRESHOLD_:-131072}
export ONEDNN_PRIMITIVE_CACHE_CAPACITY=${ONEDNN_PRIMITIVE_CACHE_CAPACITY:-8}
mkdir -p "$STATE" models

# 2. The shop database (created and seeded once; `make db` does only this).
"$PY" -m rasa_project.db init

# 3. Profile: the hub models when they can be had, else the offline `scratch` backbones.
PROFILE=$("$PY" scripts/choose_profile.py 2>"$STATE/profile.txt") || die "choose_profile.py failed: $(cat "$STATE/profile.txt")"
if [ "$PROFILE" = hub ]; then
  CONFIG=config.yml
  say "profile: hub (config.yml: hfl/chinese-bert-wwm-ext + qgyd2021/few_shot_intent_gpt2_base)"
else
  CONFIG=config.offline.yml
  say "hub models unavailable ($(sed -e 's/^profile: offline (config.offline.yml): //' "$STATE/profile.txt")): using the offline profile config.offline.yml (scratch backbones); for the hub models set HF_ENDPOINT to a mirror or pre-fill the HF cache, then run again."
fi
MODEL=models/assistant-$PROFILE.tar.gz
# The assistant's own files, named one by one: data/ may also hold converted benchmark datasets.
DATA=(data/nlu.yml data/stories.yml data/rules.yml)

# 4. Train when the model is missing or older than its config, domain or data
#    (rasa's own cache in .rasa/cache skips the components whose inputs did not change).
if [ "$MODE" = train ] || [ ! -f "$MODEL" ] || [ -n "$(find "$CONFIG" domain.yml "${DATA[@]}" -newer "$MODEL" 2>/dev/null | head -n 1)" ]; then
  say "training $MODEL from $CONFIG (a few minutes on a CPU) ..."
  "$PY" -m rasa train --config "$CONFIG" --domain domain.yml --data "${DATA[@]}" \
    --out models --fixed-model-name "assistant-$PROFILE"
else
  say "model $MODEL is up to date (delete it or run 'make train' to retrain)"
fi
[ "$MODE" = train ] && exit 0

# 5. The action server (rasa-sdk), stopped when this script ends.
ENDPOINTS=rasa_project/endpoints.yml
if [ "$ACTIONS_PORT" != 5055 ]; then
  sed "s#http://localhost:5055/webhook#http://localhost:$ACTIONS_PORT/webhook#" "$ENDPOINTS" > "$STATE/endpoints.yml"
  ENDPOINTS=$STATE/endpoints.yml
fi
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() {  # url seconds pid log
  for _ in $(seq 1 "$2"); do
    if "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" >/dev/null 2>&1; then return 0; fi
    kill -0 "$3" 2>/dev/null || { tail -n 30 "$4" >&2; die "the process behind $1 exited (log: $4)"; }
    sleep 1
  done
  tail -n 30 "$4" >&2
  die "$1 did not answer within $2 s (log: $4)"
}

say "starting the action server on port $ACTIONS_PORT (log: .rasa/quickstart/actions.log)"
"$PY" -m rasa run actions --actions rasa_project.actions --port "$ACTIONS_PORT" >"$STATE/actions.log" 2>&1 &
PIDS+=($!)
wait_for "http://localhost:$ACTIONS_PORT/health" 120 "${PIDS[-1]}" "$STATE/actions.log"

if [ "$MODE" = shell ]; then
  say "rasa shell with $MODEL; type /stop to leave"
  "$PY" -m rasa shell --model "$MODEL" --endpoints "$ENDPOINTS"
  exit 0
fi

# 6. rasa run: REST channel, HTTP API, and the web chat page (rasa_project/webchat_channel.py).
say "starting rasa run on port $RASA_PORT with $MODEL (log: .rasa/quickstart/rasa.log)"
"$PY" -m rasa run --enable-api --cors "*" --model "$MODEL" --endpoints "$ENDPOINTS" \
  --credentials rasa_project/credentials.yml --port "$RASA_PORT" >"$STATE/rasa.log" 2>&1 &
PIDS+=($!)
wait_for "http://localhost:$RASA_PORT/status" 300 "${PIDS[-1]}" "$STATE/rasa.log"

say "ready."
say "  web chat page:  http://localhost:$RASA_PORT/webhooks/webchat/"
say "  REST webhook:   POST http://localhost:$RASA_PORT/webhooks/rest/webhook  {\"sender\": \"me\", \"message\": \"你好\"}"
say "  NLU parse:      POST http://localhost:$RASA_PORT/model/parse  {\"text\": \"我的快递到哪了\"}"
say "Ctrl-C stops the assistant; conversations stay in rasa_project/tracker.db."
wait "${PIDS[-1]}"
