#!/usr/bin/env bash
# Run every cargo-fuzz target in fuzz/ for a fixed time and print executions and coverage.
#
#   scripts/fuzz.sh --seconds 600              # all targets, 10 minutes each
#   scripts/fuzz.sh --seconds 60 configs       # one target
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Seed corpora come
# from the committed fixtures (fuzz/corpus/, git-ignored); crashes land in fuzz/artifacts/<target>/
# and make the script exit 1. Each input may use at most 2 GiB and 10 s (-rss_limit_mb,
# -timeout), so an allocation or a hang driven by a hostile file counts as a crash.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_EACH=60
TARGETS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) SECONDS_EACH="$2"; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) TARGETS+=("$1"); shift ;;
  esac
done
if [[ ${#TARGETS[@]} -eq 0 ]]; then
  TARGETS=(audio_decode configs safetensors chat_template server_request)
fi

cd "$ROOT/fuzz"
CORPUS="$ROOT/fuzz/corpus"

# seed TARGET NAME SELECTOR FILE: a corpus entry of the selector byte (when given) and FILE.
seed() {
  local dir="$CORPUS/$1"
  mkdir -p "$dir"
  if [[ -n "$3" ]]; then
    { printf "\\x$3"; cat "$4"; } > "$dir/seed-$2"
  else
    cp "$4" "$dir/seed-$2"
  fi
}

FIX="$ROOT/tests/fixtures/audio"
for f in tone_440_16k.wav short_0p2s_16k.wav pcm8_8k.wav crow_44k1.flac edge/dog_frames.mp3 edge/dog_empty_id3v2.mp3 complete_44k1_stereo.oga; do
  seed audio_decode "$(basename "$f")" 00 "$FIX/$f"
done
MODEL="$ROOT/models/tiny-chat"
seed configs config 00 "$MODEL/config.json"
seed configs generation 01 "$MODEL/generation_config.json"
seed configs preprocessor 02 "$ROOT/models/tiny-base/preprocessor_config.json"
seed configs processor 03 "$MODEL/processor_config.json"
seed configs tokenizer 04 "$MODEL/tokenizer_config.json"
seed configs index 05 "$MODEL/model.safetensors.index.json"
for f in "$MODEL"/model-0000[12]-of-00004.safetensors; do
  seed safetensors "$(basename "$f")" "" "$f"
done
mkdir -p "$CORPUS/chat_template"
{ echo "Describe the audio."; cat "$MODEL/chat_template.jinja"; } > "$CORPUS/chat_template/seed-own"
# Request bodies: input_audio, a data: URL, text only with every sampling and pruning field.
mkdir -p "$CORPUS/server_request"
b64=$(base64 -w0 "$FIX/short_0p2s_16k.wav")
printf '{"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"%s","format":"wav"}},{"type":"text","text":"What is this?"}]}],"max_tokens":8}' \
  "$b64" > "$CORPUS/server_request/seed-input-audio"
printf '{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"audio_url","audio_url":{"url":"data:audio/x-wav;base64,%s"}}]}],"stream":true,"stream_options":{"include_usage":true}}' \
  "$b64" > "$CORPUS/server_request/seed-data-url"
printf '%s' '{"messages":[{"role":"user","content":[{"type":"audio_url","audio_url":{"url":"file:///tmp/auris-fuzz-media/clip.wav"}}]}]}' \
  > "$CORPUS/server_request/seed-file-url"
printf '%s' '{"messages":[{"role":"user","content":"hi"}],"temperature":0.7,"top_p":0.9,"seed":3,"stop":["a","b"],"prune":"visionzip","keep":0.5,"segments":4,"n":1}' \
  > "$CORPUS/server_request/seed-fields"

# No sanitizer: the code under test is safe Rust (panics, hangs and allocations are what is
# looked for), and the build stays affordable.
cargo +nightly fuzz build -O -s none
failed=0
for t in "${TARGETS[@]}"; do
  mkdir -p "$ROOT/fuzz/artifacts/$t"
  log="$ROOT/fuzz/artifacts/$t.log"
  set +e
  cargo +nightly fuzz run -O -s none "$t" "$CORPUS/$t" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 -max_len=1048576 \
    -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
  corp=$(ls "$CORPUS/$t" | wc -l)
  status=ok
  if [[ $rc -ne 0 ]]; then status="CRASH (see $log, fuzz/artifacts/$t/)"; failed=1; fi
  printf '%-14s %6ss  executions %-10s coverage %-6s features %-6s corpus %-5s %s\n' \
    "$t" "$SECONDS_EACH" "$runs" "$cov" "$ft" "$corp" "$status"
done
exit $failed
