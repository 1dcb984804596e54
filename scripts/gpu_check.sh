#!/usr/bin/env bash
# The prepared GPU check: one short command for a machine with an NVIDIA GPU and no network.
#
#   scripts/gpu_check.sh [--bundle DIR | --bin PATH] [--device cuda|cuda:N|cpu]
#                        [--bench-model DIR] [--timeout S]
#
# Takes a prebuilt auris: --bundle DIR is what scripts/build_cuda.sh leaves in
# target/cuda/gpu-bundle (the stripped binary gzipped, and the libcudart.so.13 it was linked
# with; the GPU machine provides its driver and the CUDA 13 cuBLAS/cuRAND/NVRTC libraries, found
# through LD_LIBRARY_PATH or the pip wheels' site-packages/nvidia/cu13/lib), or --bin PATH a
# binary (default target/release/auris). With the committed tiny models and reference fixtures
# it runs on the device:
#   - greedy parity in f32: the output ids of tiny-base and tiny-chat (plain and with segmentwise
#     pruning at 0.25, kept indices too) equal the transformers fixtures;
#   - the same in bf16, reporting where the ids first drift from the f32 reference;
#   - `ask --score-choices` picks the reference's answer;
#   - `auris bench --quick` on the largest checkpoint present (bench/work/m7b, the realistic bench
#     model, models/real-mini or tiny-chat; --bench-model to choose).
# One line per check (PASS, FAIL or INFO), exit status 1 if any check failed.
# `--device cpu` is the dry run any machine can do. Needs python3 (standard library only).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle)
      bundle="${2:?--bundle needs the folder scripts/build_cuda.sh made}"; shift
      work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
      gunzip -c "$bundle/auris.gz" >"$work/auris"; chmod +x "$work/auris"
      # The bundle's CUDA runtime, then any CUDA 13 libraries installed as wheels.
      libs="$(cd "$bundle" && pwd)"
      for d in $(python3 -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null); do
        [ -d "$d/nvidia/cu13/lib" ] && libs="$libs:$d/nvidia/cu13/lib"
      done
      export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      args+=(--bin "$work/auris") ;;
    *) args+=("$1") ;;
  esac
  shift
done
python3 "$ROOT/scripts/lib/gpu_check.py" "${args[@]}"
