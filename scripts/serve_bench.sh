#!/usr/bin/env bash
# Serving benchmark (issue 30): `auris serve` against llama.cpp's llama-server, both streaming
# OpenAI chat completions with `input_audio`, in the style of `vllm bench serve`. For each weight
# type and each N of --clients: a fresh server, one warm-up request, then a closed loop of N
# concurrent clients sending a fixed number of requests (clips of 3 s, 10 s and 29.9 s in turn,
# greedy, 64 new tokens each by default; scripts/serve_bench.py). Reports aggregate output
# tokens/s, requests/s, p50/p99 time to first token, time per output token, inter-token latency
# and end to end latency. Writes bench/serve_results.json (every run, with the machine) and
# bench/serve_results.md (the table) and prints the table.
#
#   scripts/serve_bench.sh [--quick] [--only auris|llama] [--weights LIST] [--clients LIST]
#                          [--requests R] [--clips LIST] [--new-tokens M] [--threads T]
#                          [--out PATH]
#
#   --quick         6 requests per N (default 12; at least N, in rounds of the clips)
#   --only ENGINE   auris or llama (default both)
#   --weights LIST  bf16,q8_0 (the default) or one of them
#   --clients LIST  concurrencies (default 1,2,4,8)
#   --requests R    requests per N (a multiple of the clips keeps the mix even)
#   --clips LIST    clip lengths in seconds, sent in turn: 3, 10, 29.9 (default all three);
#                   `--clips 3 --new-tokens 256` makes the load bound by decoding, not prefill
#   --new-tokens M  tokens asked of each request (default 64)
#   --threads T     threads of each server (default: all cores)
#   --out PATH      the JSON file; the table goes next to it with .md
#
# The servers, same weights and threads:
#   auris       target/release/auris (built unless AURIS_BIN names a binary) `serve` on the
#               realistic-shape checkpoint stored in bf16, as the hub stores Qwen2-Audio:
#               `--dtype bf16` (bf16 weights kept), and `--quant q8_0`; `--parallel N` when the
#               binary has that option (otherwise it serves one request at a time).
#   llama       llama-server built from the llama.cpp vendored in the pinned llama-cpp-python
#               sdist (scripts/lib/llama_cpp.sh), `-np N`, a context of N x (960 + new tokens)
#               tokens (per slot: 750 audio tokens, the prompt and the new tokens), the text
#               GGUF of the same type (bf16 or q8_0) and a bf16 mmproj GGUF, made by the vendored
#               convert_hf_to_gguf.py; prompt caching off (every request repeats a clip: a cache
#               would skip its prefill); `ignore_eos`, so every answer has all its tokens.
# Differences that stay: auris serve has no ignore_eos (an answer may end early at an
# end-of-sequence token: the table gives the mean output tokens), and llama.cpp's audio path pads
# every clip to a 30 s window (750 audio tokens whatever the length; auris: 25 per second), so
# its prompts are longer on the 3 s and 10 s clips (the table gives the mean prompt tokens).
#
# On a fresh machine it makes, once: the venv $AURIS_BENCH_VENV (default .venv-bench/, shared
# with scripts/bench.sh; the reference pins and the converter's), under bench/work/ (git-ignored)
# the bf16 checkpoint (bench/work/realistic-bf16, as scripts/bench.sh makes it), the clips, and
# bench/work/serve/: the checkpoint with a tokenizer naming every id (see serve_bench.py
# full-vocab) and its GGUF files; and llama-server in scripts/.cache/bench/ (75 minutes on 2 cores
# shared with other builds). With all that made, the default run should take about 20 minutes on
# a quiet 2-core machine, --quick about half. Run it on a quiet machine: every figure is
# wall-clock time, and llama.cpp's spinning threads suffer most from other work.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/lib/pins.sh
source scripts/lib/venv.sh
source scripts/lib/llama_cpp.sh
source scripts/lib/serve.sh

VENV="${AURIS_BENCH_VENV:-$ROOT/.venv-bench}"
PY="$VENV/bin/python"
CACHE="$ROOT/scripts/.cache/bench"
WORK="$ROOT/bench/work"
MODEL_BF16="$WORK/realistic-bf16"
SERVE="$WORK/serve"
MODEL="$SERVE/model"
GGUF_DIR="$SERVE/gguf"
CLIP_SECONDS="3,10,29.9"
NEW_TOKENS=64

COMMAND="scripts/serve_bench.sh $*"
REQUESTS=12
ONLY=""
WEIGHTS="bf16,q8_0"
CLIENTS="1,2,4,8"
THREADS="$(nproc)"
OUT="$ROOT/bench/serve_results.json"
while (($#)); do
  case "$1" in
    --quick) REQUESTS=6 ;;
    --only) ONLY="${2:?--only needs auris or llama}"; shift ;;
    --weights) WEIGHTS="${2:?--weights needs a list}"; shift ;;
    --clients) CLIENTS="${2:?--clients needs a list}"; shift ;;
    --requests) REQUESTS="${2:?--requests needs a number}"; shift ;;
    --clips) CLIP_SECONDS="${2:?--clips needs a list}"; shift ;;
    --new-tokens) NEW_TOKENS="${2:?--new-tokens needs a number}"; shift ;;
    --threads) THREADS="${2:?--threads needs a number}"; shift ;;
    --out) OUT="${2:?--out needs a path}"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$ONLY" in
  ""|auris|llama) ;;
  *) echo "--only takes auris or llama, not $ONLY" >&2; exit 2 ;;
esac
for w in ${WEIGHTS//,/ }; do
  [[ "$w" == bf16 || "$w" == q8_0 ]] || { echo "--weights: bf16 or q8_0, not $w" >&2; exit 2; }
done
[[ "$NEW_TOKENS" =~ ^[1-9][0-9]*$ ]] || { echo "--new-tokens: a positive number, not $NEW_TOKENS" >&2; exit 2; }
CLIPS=""
CLIP_COUNT=0
for c in ${CLIP_SECONDS//,/ }; do
  case "$c" in
    3) f=clip_3s.wav ;;
    10) f=clip_10s.wav ;;
    29.9) f=clip_29p9s.wav ;;
    *) echo "--clips: 3, 10 or 29.9 seconds, not $c" >&2; exit 2 ;;
  esac
  CLIPS="${CLIPS:+$CLIPS,}$WORK/$f"
  CLIP_COUNT=$((CLIP_COUNT + 1))
done
((CLIP_COUNT > 0)) || { echo "--clips: at least one clip" >&2; exit 2; }
# llama-server's slot: a clip's 750 audio tokens (every clip is padded to 30 s), the chat
# template and question, and the new tokens.
CTX_PER_SLOT=$((960 + NEW_TOKENS))

log() { echo "serve_bench.sh: $*" >&2; }
wants() { [[ -z "$ONLY" || "$ONLY" == "$1" ]]; }

SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT
# A signal ends the script through exit, so the EXIT trap stops the server.
trap 'exit 143' TERM
trap 'exit 130' INT

# $1 -> $2 with the vendored converter; the rest are converter arguments.
convert() {
  local from="$1" out="$2"
  shift 2
  [[ -f "$out" && ! "$out" -ot "$from/tokenizer.json" ]] && return 0
  log "converting $from to $out"
  "$PY" scripts/lib/convert_gguf.py "$LLAMA_DIR" -- "$from" "$@" --outfile "$out.tmp" \
    >"$out.log" 2>&1 || { tail -n 20 "$out.log" >&2; exit 1; }
  mv "$out.tmp" "$out"
}

ensure_inputs() {
  if [[ ! -f "$MODEL_BF16/model.safetensors.index.json" ]]; then
    log "writing the bf16 realistic-shape checkpoint to $MODEL_BF16"
    "$PY" scripts/make_bench_model.py "$MODEL_BF16" --dtype bf16
  fi
  [[ -f "$WORK/clip_3s.wav" && -f "$WORK/clip_29p9s.wav" ]] || "$PY" scripts/lib/bench_clips.py "$WORK"
  if [[ ! -f "$MODEL/tokenizer.json" || "$MODEL/tokenizer.json" -ot "$MODEL_BF16/model.safetensors.index.json" ]]; then
    rm -rf "$MODEL"
    "$PY" scripts/serve_bench.py full-vocab "$MODEL_BF16" "$MODEL"
  fi
  mkdir -p "$GGUF_DIR"
  if wants llama; then
    convert "$MODEL" "$GGUF_DIR/mmproj-bf16.gguf" --mmproj --outtype bf16
    local w
    for w in ${WEIGHTS//,/ }; do
      convert "$MODEL" "$GGUF_DIR/text-$w.gguf" --outtype "$w"
    done
  fi
}

ensure_auris() {
  if [[ -n "${AURIS_BIN:-}" ]]; then
    AURIS="$AURIS_BIN"
  else
    log "building auris (cargo build --release --bin auris)"
    cargo build --release --quiet --bin auris
    AURIS="$ROOT/target/release/auris"
  fi
  [[ -x "$AURIS" ]] || { echo "no auris binary at $AURIS" >&2; exit 1; }
}

# Waits until GET $1 answers 200 (the model is loaded) while $SERVER_PID lives; $2 is its log.
wait_ready() {
  local url="$1" server_log="$2"
  for _ in $(seq 1200); do
    curl -sf -o /dev/null "$url" && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$server_log" >&2; log "the server exited"; exit 1; }
    sleep 0.5
  done
  tail -n 30 "$server_log" >&2
  log "the server was not ready after 600 s"
  exit 1
}

stop_server() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# One closed-loop run against the server on $PORT: engine $1, weights $2, N $3, extra body $4.
bench_run() {
  local engine="$1" w="$2" n="$3" extra="$4" label="$1 $2 N=$3"
  local base="http://127.0.0.1:$PORT"
  "$PY" scripts/serve_bench.py run --base "$base" --clients 1 --requests 1 --clips "$WORK/clip_3s.wav" \
    --max-tokens 8 --body-extra "$extra" --label "warm-up" --engine "$engine" --weights "$w" \
    --out "$SERVE/warmup.json" 2>/dev/null || { log "$label: the warm-up request failed"; exit 1; }
  # At least one request per client, in whole rounds of the clips.
  local requests="$REQUESTS"
  ((requests >= n)) || requests=$(((n + CLIP_COUNT - 1) / CLIP_COUNT * CLIP_COUNT))
  log "$label: $requests requests"
  "$PY" scripts/serve_bench.py run --base "$base" --clients "$n" --requests "$requests" \
    --clips "$CLIPS" --max-tokens "$NEW_TOKENS" --body-extra "$extra" --label "$label" \
    --engine "$engine" --weights "$w" --out "$RUNS/$engine-$w-n$n.json"
}

run_auris() {
  local w="$1" n="$2" flags server_log="$SERVE/auris-$1-n$2.log"
  case "$w" in
    bf16) flags=(--dtype bf16) ;;
    q8_0) flags=(--quant q8_0) ;;
  esac
  ((HAS_PARALLEL)) && flags+=(--parallel "$n")
  PORT="$(free_port)"
  "$AURIS" serve --model "$MODEL" --device cpu --host 127.0.0.1 --port "$PORT" \
    --threads "$THREADS" "${flags[@]}" 2>"$server_log" &
  SERVER_PID=$!
  wait_ready "http://127.0.0.1:$PORT/ready" "$server_log"
  bench_run auris "$w" "$n" '{}'
  stop_server
}

run_llama() {
  local w="$1" n="$2" server_log="$SERVE/llama-$1-n$2.log"
  PORT="$(free_port)"
  "$LLAMA_SERVER" -m "$GGUF_DIR/text-$w.gguf" --mmproj "$GGUF_DIR/mmproj-bf16.gguf" \
    --host 127.0.0.1 --port "$PORT" -t "$THREADS" -tb "$THREADS" -np "$n" \
    -c "$((n * CTX_PER_SLOT))" --no-cache-prompt --cache-ram 0 >"$server_log" 2>&1 &
  SERVER_PID=$!
  wait_ready "http://127.0.0.1:$PORT/health" "$server_log"
  bench_run llama-server "$w" "$n" '{"ignore_eos": true, "cache_prompt": false}'
  stop_server
}

main() {
  local start=$SECONDS
  ensure_venv "$VENV" "${REF_PINS[@]}" "${GGUF_PINS[@]}"
  llama_cpp_sdist "$VENV/bin/pip" "$CACHE"
  ensure_inputs
  local notes=() llama_version=""
  if wants auris; then
    ensure_auris
    HAS_PARALLEL=0
    if "$AURIS" serve --help | grep -q -- '--parallel'; then
      HAS_PARALLEL=1
      notes+=("auris serve --parallel N (N = the clients)")
    else
      notes+=("auris serve without --parallel: one request at a time")
    fi
    notes+=("auris: no ignore_eos; an answer may end before $NEW_TOKENS tokens")
  fi
  if wants llama; then
    llama_server_build "$CACHE"
    llama_version="$("$LLAMA_SERVER" --version 2>&1 | grep -m1 version || true)"
    notes+=("llama-server: -np N, -c N x $CTX_PER_SLOT, no prompt cache, ignore_eos; every clip padded to one 30 s window (750 audio tokens)")
  fi
  RUNS="$SERVE/runs"
  rm -rf "$RUNS"
  mkdir -p "$RUNS"
  local load_start w n
  load_start="$(cut -d' ' -f1 /proc/loadavg)"
  if awk -v l="$load_start" 'BEGIN { exit !(l > 1.0) }'; then
    log "warning: load average $load_start: other work is running, the times will not be reliable"
  fi
  for w in ${WEIGHTS//,/ }; do
    for n in ${CLIENTS//,/ }; do
      if wants auris; then run_auris "$w" "$n"; fi
      if wants llama; then run_llama "$w" "$n"; fi
    done
  done
  local note_args=()
  for n in "${notes[@]}"; do note_args+=(--note "$n"); done
  mkdir -p "$(dirname "$OUT")"
  "$PY" scripts/serve_bench.py report --runs "$RUNS" --threads "$THREADS" \
    --llama-version "$llama_version" --load-start "$load_start" "${note_args[@]}" \
    --command "$COMMAND" --elapsed-s "$((SECONDS - start))" --out "$OUT"
  log "wrote $OUT and ${OUT%.json}.md in $((SECONDS - start)) s"
}

main
