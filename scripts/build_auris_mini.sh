#!/usr/bin/env bash
# Build models/auris-mini: models/real-mini (built first with scripts/build_real_mini.sh when
# missing) with the trained projector committed in models/auris-mini-projector/. No training:
# a fresh machine has the model in the time real-mini takes (about 3 minutes on 2 cores).
#
#   scripts/build_auris_mini.sh
#   scripts/build_auris_mini.sh --projector other/projector.safetensors --out /elsewhere/auris-mini
#
# The projector is reproduced by scripts/make_projector_data.sh + scripts/train_projector.sh
# (the command, data manifest hash and seed are in models/auris-mini-projector/training.json).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/real_common.sh"

REAL="${AURIS_REAL_MINI:-$ROOT/models/real-mini}"
PROJECTOR="$ROOT/models/auris-mini-projector/projector.safetensors"
OUT="$ROOT/models/auris-mini"
while (($#)); do
  case "$1" in
    --projector) PROJECTOR="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "error: unknown argument $1" >&2; exit 2 ;;
  esac
done
ensure_ref_venv
if [[ ! -f "$REAL/config.json" ]]; then
  "$ROOT/scripts/build_real_mini.sh" --out "$REAL"
fi
"$PY" "$ROOT/scripts/build_auris_mini.py" --real-mini "$REAL" --projector "$PROJECTOR" --out "$OUT"
