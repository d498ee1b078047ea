#!/usr/bin/env bash
# The sample assistant in one command (`make run`): install if needed, create the shop database,
# pick the profile (hub models or offline `scratch`), train if needed, start the action server and
# `rasa run` on 127.0.0.1 with the HTTP API behind a token, print the web chat URL. Ctrl-C stops everything.
#
#   scripts/quickstart.sh [run|shell|train]
#     run    (default) serve the channels (REST, socket.io, the web chat page) and the HTTP API
#     shell  talk to the assistant in the terminal (`rasa shell`), action server included; works
#            beside a running `make run` (it takes free ports and writes its own logs)
#     train  train the chosen profile's model and stop
#
# Environment:
#   RASA_PORT (5005), ACTIONS_PORT (5055)   ports; `shell` moves to free ones when these are taken
#   RASA_INTERFACE (127.0.0.1)              where `rasa run` listens; 0.0.0.0 = every interface
#   RASA_API=token|open|off (token)         Rasa's HTTP API: behind a token (RASA_AUTH_TOKEN, else one
#                                           generated into .rasa/quickstart/api_token), open (no token:
#                                           anyone who reaches the port reads and writes every conversation),
#                                           or not served (channels only)
#   RASA_CORS                               origins allowed to call the server from a browser (default: the
#                                           web chat page's own); add a widget page's origin here
#   NLU_BERT_PROFILE=hub|offline            force a profile; NLU_BERT_MODEL=path serves that model as it is
#   SHOP_DB_URL, TRACKER_DB                 the shop database (SQLAlchemy URL) and the SQLite tracker store
#   QUICKSTART_STATE (.rasa/quickstart)     logs, the API token, generated endpoints
#   HF_ENDPOINT / HF_HUB_OFFLINE            where the hub models come from
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-run}
MODE=${MODE#--}                        # `--shell` works too
RASA_PORT=${RASA_PORT:-5005}
ACTIONS_PORT=${ACTIONS_PORT:-5055}
RASA_INTERFACE=${RASA_INTERFACE:-127.0.0.1}
RASA_API=${RASA_API:-token}
PY=$ROOT/.venv/bin/python
STATE=${QUICKSTART_STATE:-$ROOT/.rasa/quickstart}   # logs and generated files (git-ignored)

say() { printf '\033[1;32m[quickstart]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[quickstart]\033[0m %s\n' "$*" >&2; exit 1; }

case "$MODE" in run|shell|train) ;; *) die "usage: scripts/quickstart.sh [run|shell|train]";; esac
case "$RASA_API" in token|open|off) ;; *) die "RASA_API must be token, open or off, got '$RASA_API'";; esac

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

# Logs of this run in $STATE/<mode>/, unless another `make <mode>` holds them: then in $STATE/<mode>-<pid>/.
# A log another process writes is never truncated.
LOGS=$STATE/$MODE
if command -v flock >/dev/null 2>&1; then
  exec 9>"$STATE/$MODE.lock"
  if ! flock -n 9; then
    LOGS=$STATE/$MODE-$$
    say "another 'make $MODE' is running: the logs of this one go to ${LOGS#"$ROOT"/}"
  fi
else
  LOGS=$STATE/$MODE-$$
fi
mkdir -p "$LOGS"

# 2. The shop database (created and seeded once; `make db` does only this).
"$PY" -m rasa_project.db init

# 3. Profile and model: NLU_BERT_MODEL as it is, else the hub models when they can be had, else `scratch`.
if [ -n "${NLU_BERT_MODEL:-}" ]; then
  [ -f "$NLU_BERT_MODEL" ] || die "NLU_BERT_MODEL=$NLU_BERT_MODEL is not a file"
  [ "$MODE" = train ] && die "NLU_BERT_MODEL is set: nothing to train"
  MODEL=$NLU_BERT_MODEL
  say "model: $MODEL (NLU_BERT_MODEL)"
else
  PROFILE=$("$PY" scripts/choose_profile.py 2>"$LOGS/profile.txt") || die "choose_profile.py failed: $(cat "$LOGS/profile.txt")"
  if [ "$PROFILE" = hub ]; then
    CONFIG=config.yml
    say "profile: hub (config.yml: hfl/chinese-bert-wwm-ext + qgyd2021/few_shot_intent_gpt2_base)"
  else
    CONFIG=config.offline.yml
    say "hub models unavailable ($(sed -e 's/^profile: offline (config.offline.yml): //' "$LOGS/profile.txt")): using the offline profile config.offline.yml (scratch backbones); for the hub models set HF_ENDPOINT to a mirror or pre-fill the HF cache, then run again."
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
fi

# 5. Ports. `run` keeps RASA_PORT (the URL people open) and fails clearly when it is taken; the action
#    server, and everything in `shell`, moves to a free port instead.
port_free() { "$PY" - "$1" "$2" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)
EOF
}
free_port() { "$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
if ! port_free "$RASA_INTERFACE" "$RASA_PORT"; then
  [ "$MODE" = run ] && die "port $RASA_PORT is taken (another 'make run'?). Stop that server, or choose another port: RASA_PORT=5006 make run"
  NEW_PORT=$(free_port)
  say "port $RASA_PORT is taken (a running 'make run'?): rasa shell takes port $NEW_PORT"
  RASA_PORT=$NEW_PORT
fi
if ! port_free 127.0.0.1 "$ACTIONS_PORT"; then
  NEW_PORT=$(free_port)
  say "port $ACTIONS_PORT is taken (another action server?): this action server takes port $NEW_PORT"
  ACTIONS_PORT=$NEW_PORT
fi

# The endpoints with this run's action server (and TRACKER_DB when set).
ENDPOINTS=$LOGS/endpoints.yml
sed -e "s#http://localhost:5055/webhook#http://localhost:$ACTIONS_PORT/webhook#" \
    ${TRACKER_DB:+-e "s#db: \"rasa_project/tracker.db\"#db: \"$TRACKER_DB\"#"} rasa_project/endpoints.yml > "$ENDPOINTS"

# 6. The action server (rasa-sdk), stopped when this script ends.
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

say "starting the action server on port $ACTIONS_PORT (log: ${LOGS#"$ROOT"/}/actions.log)"
"$PY" -m rasa run actions --actions rasa_project.actions --port "$ACTIONS_PORT" >"$LOGS/actions.log" 2>&1 &
PIDS+=($!)
wait_for "http://localhost:$ACTIONS_PORT/health" 120 "${PIDS[-1]}" "$LOGS/actions.log"

if [ "$MODE" = shell ]; then
  say "rasa shell with $MODEL on 127.0.0.1:$RASA_PORT; type /stop to leave"
  "$PY" -m rasa shell --model "$MODEL" --endpoints "$ENDPOINTS" --port "$RASA_PORT" -i 127.0.0.1
  exit 0
fi

# 7. rasa run: the channels of credentials.yml (REST, socket.io, the web chat page, the RequestGuard) and
#    the HTTP API as RASA_API says.
PAGE_ORIGINS="http://localhost:$RASA_PORT http://127.0.0.1:$RASA_PORT"
read -r -a CORS <<< "${RASA_CORS:-$PAGE_ORIGINS}"
API_ARGS=()
if [ "$RASA_API" = token ]; then
  if [ -z "${RASA_AUTH_TOKEN:-}" ]; then
    if [ ! -s "$STATE/api_token" ]; then
      (umask 077 && "$PY" -c "import secrets; print(secrets.token_hex(32))" > "$STATE/api_token")
    fi
    RASA_AUTH_TOKEN=$(cat "$STATE/api_token")
  fi
  API_ARGS=(--enable-api "--auth-token=$RASA_AUTH_TOKEN")  # one argument: a token may begin with "-"
elif [ "$RASA_API" = open ]; then
  API_ARGS=(--enable-api)
  say "warning: RASA_API=open: Rasa's HTTP API has no token; anyone who reaches $RASA_INTERFACE:$RASA_PORT can read and change every conversation"
fi
say "starting rasa run on $RASA_INTERFACE:$RASA_PORT with $MODEL (log: ${LOGS#"$ROOT"/}/rasa.log)"
"$PY" -m rasa run "${API_ARGS[@]}" --cors "${CORS[@]}" --model "$MODEL" --endpoints "$ENDPOINTS" \
  --credentials rasa_project/credentials.yml --interface "$RASA_INTERFACE" --port "$RASA_PORT" >"$LOGS/rasa.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$RASA_PORT/webhooks/webchat/status" 300 "${PIDS[-1]}" "$LOGS/rasa.log"
for _ in $(seq 1 300); do  # the channels answer before the model is loaded
  "$PY" -c "import json, sys, urllib.request; sys.exit(not json.load(urllib.request.urlopen(sys.argv[1]))['model_loaded'])" \
    "http://127.0.0.1:$RASA_PORT/webhooks/webchat/status" 2>/dev/null && break
  kill -0 "${PIDS[-1]}" 2>/dev/null || { tail -n 30 "$LOGS/rasa.log" >&2; die "rasa run exited (log: $LOGS/rasa.log)"; }
  sleep 1
done

HOST=$([ "$RASA_INTERFACE" = 127.0.0.1 ] && echo localhost || echo "<this machine>")
say "ready."
say "  web chat page:  http://$HOST:$RASA_PORT/webhooks/webchat/"
say "  REST webhook:   POST http://$HOST:$RASA_PORT/webhooks/rest/webhook  {\"sender\": \"me\", \"message\": \"你好\"}"
say "  socket.io:      http://$HOST:$RASA_PORT/socket.io/ (rasa-webchat; allow its page's origin with RASA_CORS)"
case "$RASA_API" in
  token) say "  HTTP API:       token in ${STATE#"$ROOT"/}/api_token, e.g. POST http://$HOST:$RASA_PORT/model/parse?token=\$(cat ${STATE#"$ROOT"/}/api_token)";;
  open)  say "  HTTP API:       open (RASA_API=open)";;
  off)   say "  HTTP API:       off (RASA_API=off)";;
esac
[ "$RASA_INTERFACE" = 127.0.0.1 ] && say "  listening on 127.0.0.1 only; RASA_INTERFACE=0.0.0.0 serves other machines (see docs/reliability.md)"
say "Ctrl-C stops the assistant; conversations stay in the tracker store (${TRACKER_DB:-rasa_project/tracker.db})."
wait "${PIDS[-1]}"
