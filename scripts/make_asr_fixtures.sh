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

ensure_whisper_base
MODEL="$ROOT/models/whisper-base"

CLIPS=("$ROOT/tests/fixtures/audio/librivox_0880_16k.wav" "$ROOT/tests/fixtures/audio/librivox_0930_16k.wav")
"$PY" "$ROOT/scripts/asr_pruning.py" tiny --out "$ROOT/models/tiny-whisper"
"$PY" "$ROOT/scripts/asr_pruning.py" fixture --model "$ROOT/models/tiny-whisper" \
  --out "$ROOT/tests/fixtures/ref/asr_tiny_whisper.json" "${CLIPS[@]}"
"$PY" "$ROOT/scripts/asr_pruning.py" fixture --model "$MODEL" \
  --out "$ROOT/tests/fixtures/ref/asr_whisper_base.json" "${CLIPS[@]}"
