#!/usr/bin/env bash
# auris against PyTorch and llama.cpp on the same checkpoint, clip, prompt and thread count
# (issue 7). Writes bench/results.json (one object per engine: auris, torch, llamacpp) and
# bench/results.md (times and auris/peer ratios), and prints the table.
#
#   scripts/bench.sh [--quick] [--threads N] [--out bench/results.json] [--weights LIST] [--weights-only]
#
#   --quick         1 warm-up + 1 timed run of everything (default: 1 warm-up + 3 runs)
#   --threads N     threads for every engine (default: all cores)
#   --out PATH      the JSON file; the table goes next to it with .md
#   --weights LIST  also compare decode by weight type (default f32,bf16,q8_0,q4_0): auris with
#                   --dtype/--quant against llama.cpp with a GGUF of the same type (bf16 and q8_0
#                   from the converter, q4_0 and q4_k (llama.cpp's Q4_K_M) from llama.cpp's own
#                   quantiser), both on the 10 s clip's prompt; writes <out>_weights.json/.md.
#                   An empty LIST skips it.
#   --weights-only  only that comparison (no PyTorch, no audio stages)
#
# On a fresh machine it makes, once, under bench/work/ (git-ignored):
#   realistic/      the realistic-shape random-weight checkpoint (scripts/make_bench_model.py)
#   realistic-bf16/ the same weights stored in bf16, as the hub stores Qwen2-Audio: auris runs the
#                   audio stages on it too (`--dtype auto`: bf16 weights, f32 compute), and the
#                   table gives those times against its f32 ones
#   clip_29p9s.wav  and clip_10s.wav, cut from tests/fixtures/audio/long_42s_16k.wav
#   gguf/           the checkpoint as f32 GGUF (text) + mmproj GGUF (audio tower + projector),
#                   made by the convert_hf_to_gguf.py vendored in llama-cpp-python's sdist
# and the venv $AURIS_BENCH_VENV (default .venv-bench/): the reference pins of scripts/lib/pins.sh
# plus llama-cpp-python (built from PyPI's sdist: needs a C/C++ compiler; 21 minutes on 2 cores
# shared with other work), gguf and sentencepiece (the converter's imports). An existing venv is
# reused and completed. The auris binary is built with `cargo build --release` unless AURIS_BIN
# names one.
#
# Time on a 2-core machine, everything already made: --quick about 10-14 minutes, the default
# about twice that. The first run adds the venv, the checkpoint (~3 GB, a minute) and the GGUF
# files (~3 GB, a minute or two). Run it on a quiet machine: every number is wall-clock time, and
# multi-threaded decode collapses when other processes compete for the cores (the run records the
# load average and the table warns when it was above 1). Peak memory is 3-6 GiB per engine; each
# engine runs in its own process.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/lib/pins.sh
source scripts/lib/venv.sh
source scripts/lib/llama_cpp.sh

BENCH_PINS=("${REF_PINS[@]}" "${GGUF_PINS[@]}")
VENV="${AURIS_BENCH_VENV:-$ROOT/.venv-bench}"
PY="$VENV/bin/python"
CACHE="$ROOT/scripts/.cache/bench"
WORK="$ROOT/bench/work"
MODEL="$WORK/realistic"
MODEL_BF16="$WORK/realistic-bf16"
CLIP30="$WORK/clip_29p9s.wav"
CLIP10="$WORK/clip_10s.wav"
GGUF="$WORK/gguf/realistic-f32.gguf"
MMPROJ="$WORK/gguf/mmproj-realistic-f32.gguf"
RUN="$WORK/run"

QUICK=0
THREADS="$(nproc)"
OUT="$ROOT/bench/results.json"
WEIGHTS="f32,bf16,q8_0,q4_0"
WEIGHTS_ONLY=0
while (($#)); do
  case "$1" in
    --quick) QUICK=1 ;;
    --weights) WEIGHTS="${2?--weights needs a list}"; shift ;;
    --weights-only) WEIGHTS_ONLY=1 ;;
    --threads) THREADS="${2:?--threads needs a number}"; shift ;;
    --out) OUT="${2:?--out needs a path}"; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
WARMUP=1
REPEAT=3
((QUICK)) && REPEAT=1
NEW_TOKENS=64
MD="${OUT%.json}.md"

log() { echo "bench.sh: $*" >&2; }

has_pin() {
  venv_has_pin "$PY" "$1"
}

ensure_bench_venv() {
  ensure_venv "$VENV" "${BENCH_PINS[@]}"
  llama_cpp_sdist "$VENV/bin/pip" "$CACHE"
  if ! has_pin "$LLAMA_CPP_PYTHON"; then
    # GGML_NATIVE: the best SIMD this CPU has, as a user building llama.cpp here would get.
    log "building $LLAMA_CPP_PYTHON from source (log: $CACHE/llama-cpp-python-build.log)"
    local start=$SECONDS
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      "$VENV/bin/pip" install --verbose "$SDIST" >"$CACHE/llama-cpp-python-build.log" 2>&1 \
      || { tail -n 30 "$CACHE/llama-cpp-python-build.log" >&2; exit 1; }
    log "built $LLAMA_CPP_PYTHON in $((SECONDS - start)) s"
  fi
  local pin_list=("${BENCH_PINS[@]}" "$LLAMA_CPP_PYTHON")
  for pin in "${pin_list[@]}"; do
    has_pin "$pin" || { echo "$VENV does not match the pin $pin" >&2; exit 1; }
  done
}

ensure_inputs() {
  if [[ ! -f "$MODEL/model.safetensors.index.json" ]]; then
    log "writing the realistic-shape checkpoint to $MODEL"
    "$PY" scripts/make_bench_model.py "$MODEL"
  fi
  if [[ ! -f "$MODEL_BF16/model.safetensors.index.json" ]]; then
    log "writing the bf16 copy of the realistic-shape checkpoint to $MODEL_BF16"
    "$PY" scripts/make_bench_model.py "$MODEL_BF16" --dtype bf16
  fi
  if [[ ! -f "$CLIP30" || ! -f "$CLIP10" ]]; then
    "$PY" scripts/lib/bench_clips.py "$WORK"
  fi
  mkdir -p "$(dirname "$GGUF")"
  local args out
  for out in "$GGUF" "$MMPROJ"; do
    if [[ ! -f "$out" || "$out" -ot "$MODEL/model.safetensors.index.json" ]]; then
      args=()
      [[ "$out" == "$MMPROJ" ]] && args=(--mmproj)
      log "converting $MODEL to $out"
      "$PY" scripts/lib/convert_gguf.py "$LLAMA_DIR" -- "$MODEL" "${args[@]}" --outtype f32 \
        --outfile "$out.tmp" >"$out.log" 2>&1 || { tail -n 20 "$out.log" >&2; exit 1; }
      mv "$out.tmp" "$out"
    fi
  done
}

ensure_auris() {
  if [[ -n "${AURIS_BIN:-}" ]]; then
    AURIS="$AURIS_BIN"
  else
    log "building auris (cargo build --release)"
    cargo build --release --quiet
    AURIS="$ROOT/target/release/auris"
  fi
  [[ -x "$AURIS" ]] || { echo "no auris binary at $AURIS" >&2; exit 1; }
}

# The text GGUF of weight type $1, made on first use.
weights_gguf() {
  local out="$WORK/gguf/realistic-$1.gguf"
  if [[ "$1" == f32 ]]; then
    echo "$GGUF"
    return
  fi
  if [[ ! -f "$out" || "$out" -ot "$GGUF" ]]; then
    log "making $out"
    case "$1" in
      bf16|f16|q8_0)
        "$PY" scripts/lib/convert_gguf.py "$LLAMA_DIR" -- "$MODEL" --outtype "$1" \
          --outfile "$out.tmp" >"$out.log" 2>&1 || { tail -n 20 "$out.log" >&2; exit 1; } ;;
      q4_0) "$PY" scripts/lib/quantize_gguf.py "$GGUF" "$out.tmp" q4_0 >"$out.log" 2>&1 ;;
      q4_k) "$PY" scripts/lib/quantize_gguf.py "$GGUF" "$out.tmp" q4_k_m >"$out.log" 2>&1 ;;
      *) echo "unknown weight type $1 (f32, bf16, f16, q8_0, q4_0, q4_k)" >&2; exit 2 ;;
    esac
    mv "$out.tmp" "$out"
  fi
  echo "$out"
}

# auris and llama.cpp decoding with the same weight type, for every type in $WEIGHTS.
compare_weights() {
  local common=("$@") w flags gguf prompt
  for w in ${WEIGHTS//,/ }; do
    case "$w" in
      f32|bf16|f16) flags=(--dtype "$w") ;;
      *) flags=(--quant "$w") ;;
    esac
    gguf="$(weights_gguf "$w")"
    log "weights $w: auris ${flags[*]}"
    "$AURIS" bench --model "$MODEL" "$CLIP10" --keeps 1 --new-tokens "$NEW_TOKENS" "${flags[@]}" \
      "${common[@]}" --json >"$RUN/weights_auris_$w.json"
    prompt="$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["keeps"][0]["prompt_tokens"])' \
      "$RUN/weights_auris_$w.json")"
    log "weights $w: llama.cpp $(basename "$gguf")"
    "$PY" scripts/bench_peers.py llamacpp --model "$MODEL" --clip30 "$CLIP30" --clip10 "$CLIP10" \
      --gguf "$gguf" "${common[@]}" --new-tokens "$NEW_TOKENS" --prefill-tokens "$prompt,$prompt" \
      --out "$RUN/weights_llamacpp_$w.json" || log "warning: llama.cpp failed on $w"
  done
  "$PY" scripts/bench_weights_report.py --run "$RUN" --weights "$WEIGHTS" --threads "$THREADS" \
    --out "${OUT%.json}_weights.json"
  log "wrote ${OUT%.json}_weights.json and .md"
}

main() {
  ensure_bench_venv
  ensure_inputs
  ensure_auris
  rm -rf "$RUN"
  mkdir -p "$RUN"
  local load_start
  load_start="$(cut -d' ' -f1 /proc/loadavg)"
  if awk -v l="$load_start" 'BEGIN { exit !(l > 1.0) }'; then
    log "warning: load average $load_start: other work is running, the times will not be reliable"
  fi
  local common=(--threads "$THREADS" --warmup "$WARMUP" --repeat "$REPEAT")
  if ((WEIGHTS_ONLY)); then
    compare_weights "${common[@]}"
    return
  fi

  log "auris on the 29.9 s clip (keep 1 and segmentwise 0.25)"
  "$AURIS" bench --model "$MODEL" "$CLIP30" --keeps 1,0.25 --prune segmentwise \
    --new-tokens "$NEW_TOKENS" "${common[@]}" --json >"$RUN/auris_30s.json"
  log "auris on the 10 s clip (encoder)"
  "$AURIS" bench --model "$MODEL" "$CLIP10" --keeps 1 --new-tokens 0 "${common[@]}" \
    --json >"$RUN/auris_10s.json"
  log "auris with bf16 weights (the bf16 checkpoint, --dtype auto), both clips"
  "$AURIS" bench --model "$MODEL_BF16" "$CLIP30" --keeps 1,0.25 --prune segmentwise \
    --new-tokens "$NEW_TOKENS" "${common[@]}" --json >"$RUN/auris_bf16_30s.json"
  "$AURIS" bench --model "$MODEL_BF16" "$CLIP10" --keeps 1 --new-tokens 0 "${common[@]}" \
    --json >"$RUN/auris_bf16_10s.json"

  # The peers prefill as many tokens as auris's real prompts held (keep 1 and keep 0.25).
  local prefill
  prefill="$("$PY" -c 'import json, sys
r = json.load(open(sys.argv[1]))
print(",".join(str(k["prompt_tokens"]) for k in sorted(r["keeps"], key=lambda k: -k["keep"])))' \
    "$RUN/auris_30s.json")"
  local peer_args=(--model "$MODEL" --clip30 "$CLIP30" --clip10 "$CLIP10" "${common[@]}"
                   --new-tokens "$NEW_TOKENS" --prefill-tokens "$prefill")

  log "PyTorch"
  "$PY" scripts/bench_peers.py torch "${peer_args[@]}" --out "$RUN/torch.json" \
    || log "warning: the PyTorch run failed; its entry will say so"
  log "llama.cpp"
  "$PY" scripts/bench_peers.py llamacpp "${peer_args[@]}" --gguf "$GGUF" --mmproj "$MMPROJ" \
    --out "$RUN/llamacpp.json" || log "warning: the llama.cpp run failed; its entry will say so"

  local quick=()
  ((QUICK)) && quick=(--quick)
  "$PY" scripts/bench_report.py --auris30 "$RUN/auris_30s.json" --auris10 "$RUN/auris_10s.json" \
    --auris30-bf16 "$RUN/auris_bf16_30s.json" --auris10-bf16 "$RUN/auris_bf16_10s.json" \
    --torch "$RUN/torch.json" --llamacpp "$RUN/llamacpp.json" --threads "$THREADS" \
    --warmup "$WARMUP" --repeat "$REPEAT" "${quick[@]}" --checkpoint bench/work/realistic \
    --load-start "$load_start" \
    --out "$OUT" --md "$MD"
  log "wrote $OUT and $MD"
  [[ -z "$WEIGHTS" ]] || compare_weights "${common[@]}"
}

main
