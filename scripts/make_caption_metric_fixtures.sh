#!/usr/bin/env bash
# Regenerate tests/fixtures/eval/caption_metrics.json: CIDEr-D, BLEU-4 and ROUGE-L computed by
# the aac-metrics package itself (its pure-Python functional/cider_d.py, bleu.py, rouge_l.py) on
# the fixed candidate/reference strings in scripts/make_caption_metric_fixtures.py.
#
#   scripts/make_caption_metric_fixtures.sh                   # venv in .venv-aac/ (created if missing)
#   AURIS_AAC_VENV=/path/to/venv scripts/make_caption_metric_fixtures.sh
#
# Needs python3 (3.11 tested) and PyPI access; CI never runs it (the JSON is committed). Versions
# are pinned: torch and numpy as the reference venv (scripts/lib/pins.sh), aac-metrics and the
# two small modules its metric files import. aac-metrics is installed without its dependencies
# (sentence-transformers, msclap, transformers are for FENSE/CLAP/BERTScore, not these metrics).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AURIS_AAC_VENV:-$ROOT/.venv-aac}"

source "$ROOT/scripts/lib/pins.sh"
BASE_PINS=()
for p in "${REF_PINS[@]}"; do
  case "$p" in torch==*|numpy==*) BASE_PINS+=("$p") ;; esac
done
# aac-metrics 0.6.0 asks for pythonwrench>=0.3,<0.4; PyPI no longer serves 0.3.x, and 0.4.3 has
# the two functions its utils/checks.py uses (isinstance_generic, semver.Version).
AAC_PINS=("aac-metrics==0.6.0" "pythonwrench==0.4.3" "typing_extensions==4.16.0")

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "creating venv in $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip
  "$VENV/bin/pip" install --quiet "${BASE_PINS[@]}"
fi
"$VENV/bin/pip" install --quiet --no-deps "${AAC_PINS[@]}"

"$VENV/bin/python" - "${BASE_PINS[@]}" "${AAC_PINS[@]}" <<'PY'
import sys
from importlib.metadata import version
bad = [f"{p} (have {version(p.split('==')[0])})" for p in sys.argv[1:] if version(p.split("==")[0]) != p.split("==")[1]]
if bad:
    sys.exit("venv does not match the pins: " + ", ".join(bad))
PY

mkdir -p "$ROOT/tests/fixtures/eval"
"$VENV/bin/python" "$ROOT/scripts/make_caption_metric_fixtures.py" \
  > "$ROOT/tests/fixtures/eval/caption_metrics.json"
echo "wrote tests/fixtures/eval/caption_metrics.json" >&2
