#!/usr/bin/env bash
# Training data for auris-mini's projector (scripts/train_projector.py): synthetic English
# speech from Debian espeak-ng reading sentences of Debian's fortune files, augmented with sox.
# No recorded audio is used, so no evaluation clip can leak into training.
#
#   scripts/make_projector_data.sh                 # 6000 clips into scripts/.cache/projector-data/
#   scripts/make_projector_data.sh --count 500     # fewer
#
# Needs espeak-ng and sox (Debian bookworm: apt-get install espeak-ng sox). Downloads
# fortunes-min and fortunes 1:1.99.1-7.3 (Debian, ~0.9 MB, text only) and, for the list of
# evaluation transcripts kept out of the text, asterisk-core-sounds-en and pocketsphinx-testdata.
# Runs two workers (about 0.15 s a clip each on 2 cores); prints the manifest's sha256.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/real_common.sh"

for tool in espeak-ng sox; do
  if ! command -v "$tool" >/dev/null; then
    echo "error: $tool not found" >&2
    echo "hint: apt-get install espeak-ng sox" >&2
    exit 2
  fi
done
ensure_ref_venv

COUNT=6000
SEED=20261128
OUT="$CACHE/projector-data"
while (($#)); do
  case "$1" in
    --count) COUNT="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "error: unknown argument $1" >&2; exit 2 ;;
  esac
done

fetch_debs "fortunes-min=1:1.99.1-7.3" "fortunes=1:1.99.1-7.3" "asterisk-core-sounds-en=1.6.1-1" \
           "pocketsphinx-testdata=0.8+5prealpha+1-15"

rm -rf "$OUT"
mkdir -p "$OUT"
args=(--texts "$CACHE/x" --out "$OUT" --count "$COUNT" --seed "$SEED"
      --asterisk-text "$CACHE/x/asterisk-core-sounds-en/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
      --librivox "$CACHE/x/pocketsphinx-testdata/usr/share/pocketsphinx/test/data/librivox")
"$PY" "$ROOT/scripts/make_projector_data.py" "${args[@]}" --shard 0/2 &
pid=$!
"$PY" "$ROOT/scripts/make_projector_data.py" "${args[@]}" --shard 1/2
wait "$pid"
"$PY" "$ROOT/scripts/make_projector_data.py" "${args[@]}" --merge
