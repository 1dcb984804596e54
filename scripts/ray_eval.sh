#!/usr/bin/env bash
# Runs scripts/ray_eval.py (an `auris eval` sweep in shards over a Ray cluster) in its pinned
# venv, made on first use. Arguments go to ray_eval.py (--help lists them).
#
# Usage: scripts/ray_eval.sh [--address auto|HOST:PORT] --shards N --work-dir DIR [...] -- eval ...
# Env: VENV (default .venv-ray).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
source "$HERE/lib/venv.sh"
VENV="${VENV:-$HERE/../.venv-ray}"
# The pin of every Ray script here; scripts/ray_eval_check.sh uses the same.
RAY_PIN="ray[data]==2.60.0"
ensure_venv "$VENV" "$RAY_PIN" >&2
export RAY_USAGE_STATS_ENABLED="${RAY_USAGE_STATS_ENABLED:-0}"
exec "$VENV/bin/python" "$HERE/ray_eval.py" "$@"
