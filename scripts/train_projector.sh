#!/usr/bin/env bash
# Train auris-mini's projector on CPU (scripts/train_projector.py; see its --help).
#
#   scripts/train_projector.sh --minutes 40            # as many steps as fit 40 minutes
#   scripts/train_projector.sh --steps 420             # reproduces a run (see training.json)
#
# Needs models/real-mini (scripts/build_real_mini.sh) and the training clips
# (scripts/make_projector_data.sh). Writes models/auris-mini-projector/{projector.safetensors,
# training.json} and bench/auris_mini_training.{csv,svg}. Threads: --threads (default 2).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/real_common.sh"

ensure_ref_venv
DATA="$CACHE/projector-data"
if [[ ! -f "$DATA/manifest.jsonl" ]]; then
  echo "error: no training data in $DATA" >&2
  echo "hint: make it with scripts/make_projector_data.sh" >&2
  exit 2
fi
OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" PYTHONHASHSEED=0 PYTHONUNBUFFERED=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false \
  "$PY" "$ROOT/scripts/train_projector.py" --data "$DATA" "$@"
