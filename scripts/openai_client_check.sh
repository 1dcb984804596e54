#!/usr/bin/env bash
# Talks to `auris serve` with the official `openai` Python package (pinned venv): input_audio
# non-streaming and streaming; a 40 MB audio (over the default --max-request-mb 32) through
# urllib, requests and openai, each of which must see the 413 and its error object
# (scripts/too_large_check.py); then a bounded load test (scripts/serve_load.py).
#
# Usage: scripts/openai_client_check.sh [BINARY]   (default target/debug/auris)
# Env: VENV (default .venv-openai), REQUESTS (200), CLIENTS (8).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/venv.sh
BIN="${1:-target/debug/auris}"
VENV="${VENV:-.venv-openai}"
ensure_venv "$VENV" "openai==3.51.0" "requests==2.34.2"
LOG="$(mktemp)"
"$BIN" serve --model models/tiny-chat --device cpu --port 0 --max-new-tokens 16 2>"$LOG" &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 600); do
  ADDR="$(grep -o 'http://[0-9.:]*' "$LOG" | head -n1 || true)"
  [[ -n "$ADDR" ]] && curl -sf "$ADDR/health" >/dev/null && break
  sleep 0.1
done
[[ -n "$ADDR" ]] || { cat "$LOG" >&2; exit 1; }
"$VENV/bin/python" scripts/openai_client_check.py "$ADDR" tests/fixtures/audio/tone_440_16k.wav
"$VENV/bin/python" scripts/too_large_check.py "$ADDR" 40
# A warm-up round (allocator pools, thread stacks, the KV caches of the --parallel sequences
# running at once: its growth is not checked), then the measured one: its RSS growth must stay
# under --max-rss-growth-mib.
"$VENV/bin/python" scripts/serve_load.py "$ADDR" tests/fixtures/audio/tone_440_16k.wav \
  --requests 200 --clients "${CLIENTS:-8}" --pid "$PID" --max-rss-growth-mib 4096 >/dev/null
"$VENV/bin/python" scripts/serve_load.py "$ADDR" tests/fixtures/audio/tone_440_16k.wav \
  --requests "${REQUESTS:-200}" --clients "${CLIENTS:-8}" --pid "$PID" --max-rss-growth-mib 32
kill -TERM "$PID"
wait "$PID"
echo "server exited with status $?"
