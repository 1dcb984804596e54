#!/usr/bin/env bash
# Quality of the weight modes on real weights: models/real-mini (build it first with
# scripts/build_real_mini.sh) over the 17 real clips, each mode against auris in f32: mean KL
# divergence of the next-token distributions over the prompt and 32 greedy steps, top-1
# agreement, identical 32-token greedy outputs (scripts/quant_quality.py says how).
#
#   scripts/quant_quality.sh                               # all modes, bench/quant_quality.json
#   scripts/quant_quality.sh --modes q8_0 --out /tmp/q8.json
#
#   scripts/quant_quality.sh --modes compute_bf16 --torch --out bench/compute_quality.json
#                                                          # --compute bf16, and PyTorch bf16 vs f32
#
# Builds target/release/auris (AURIS_BIN=path uses that binary instead); the venv is the
# reference one (.venv-ref/, or AURIS_REF_VENV), created when missing. About 20 minutes on 2
# cores for the five default modes.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/real_common.sh"

MODEL="${AURIS_REAL_MINI:-$ROOT/models/real-mini}"
if [[ ! -f "$MODEL/config.json" ]]; then
  echo "error: no checkpoint in $MODEL" >&2
  echo "hint: build it with scripts/build_real_mini.sh" >&2
  exit 2
fi
ensure_ref_venv
fetch_clip_packages
BIN="${AURIS_BIN:-}"
if [[ -z "$BIN" ]]; then
  (cd "$ROOT" && cargo build --release --quiet --bin auris)
  BIN="$ROOT/target/release/auris"
fi
"$PY" "$ROOT/scripts/quant_quality.py" --auris "$BIN" --model "$MODEL" "$@"
