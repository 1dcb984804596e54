#!/usr/bin/env bash
# Peak RSS and wall time of `auris caption --fit-context` on 0.5, 1, 10 and 60 minutes of
# 16 kHz audio, and the context check on an 8192-position copy of the model (Qwen2-Audio-7B's
# value; skipped with --no-context-check, e.g. for a multi-GB checkpoint).
#
#   scripts/long_audio_rss.sh [--model models/tiny-chat] [--auris target/release/auris]
#       [--minutes "0.5 1 10 60"] [--no-context-check] [--tag NAME]
#
# --tag names the run's output files, so that two builds can be measured side by side.
# The WAVs (the 42 s fixture clip repeated) go to bench/work/long_audio/ (git-ignored).
# Prints a markdown table: minutes, audio tokens, kept tokens, keep ratio, peak RSS, wall time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="$ROOT/models/tiny-chat"
AURIS="$ROOT/target/debug/auris"
MINUTES="0.5 1 10 60"
CONTEXT_CHECK=1
TAG=run
while [[ $# -gt 0 ]]; do
  case "$1" in
    --model) MODEL="$2"; shift 2 ;;
    --auris) AURIS="$2"; shift 2 ;;
    --minutes) MINUTES="$2"; shift 2 ;;
    --no-context-check) CONTEXT_CHECK=0; shift ;;
    --tag) TAG="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
WORK="$ROOT/bench/work/long_audio"
mkdir -p "$WORK"

make_wav() {  # make_wav MINUTES PATH: the 42 s fixture repeated to MINUTES minutes, 16-bit mono
  python3 - "$1" "$2" "$ROOT/tests/fixtures/audio/long_42s_16k.wav" <<'PY'
import sys, wave
minutes, out, src = float(sys.argv[1]), sys.argv[2], sys.argv[3]
with wave.open(src) as w:
    frames = w.readframes(w.getnframes())
need = int(minutes * 60 * 16000) * 2
with wave.open(out, "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000)
    while need > 0:
        w.writeframes(frames[:need]); need -= len(frames[:need])
PY
}

echo "| minutes | audio tokens | kept | keep | peak RSS (MB) | wall (s) |"
echo "|---|---|---|---|---|---|"
for m in $MINUTES; do
  wav="$WORK/speech_${m}min.wav"
  [[ -f "$wav" ]] || make_wav "$m" "$wav"
  out="$WORK/${TAG}_${m}.json"
  /usr/bin/time -f "%M %e" -o "$WORK/${TAG}_time_${m}" \
    "$AURIS" caption --quiet --json --fit-context --max-new-tokens 8 --model "$MODEL" "$wav" > "$out"
  read -r rss wall < "$WORK/${TAG}_time_${m}"
  python3 - "$out" "$m" "$rss" "$wall" <<'PY'
import json, sys
v = json.loads(open(sys.argv[1]).read())
c = v["context"]
print(f"| {sys.argv[2]} | {c['audio_tokens']} | {c['kept_audio_tokens']} | {c['keep']} | {int(sys.argv[3]) / 1024:.0f} | {sys.argv[4]} |")
PY
done

[[ $CONTEXT_CHECK == 1 ]] || exit 0

# The context check on an 8192-position model: an error naming the numbers, then a caption.
short="$WORK/model_8192"
rm -rf "$short"; cp -r "$MODEL" "$short"
python3 - "$short/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["text_config"]["max_position_embeddings"] = 8192
json.dump(c, open(sys.argv[1], "w"))
PY
wav="$WORK/speech_10min.wav"
[[ -f "$wav" ]] || make_wav 10 "$wav"
echo
echo "10 minutes on an 8192-position model, without --fit-context (exit code, stderr):"
set +e
"$AURIS" caption --quiet --max-new-tokens 8 --model "$short" "$wav"
echo "exit code $?"
set -e
echo "with --fit-context:"
"$AURIS" caption --quiet --json --fit-context --max-new-tokens 8 --model "$short" "$wav" \
  | python3 -c 'import json,sys; v=json.loads(sys.stdin.read()); print({"text": v["text"], "prune": v["prune"], "context": v["context"]})'
