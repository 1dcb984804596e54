#!/usr/bin/env bash
# Build auris with the CUDA backend on a machine without a CUDA toolkit (and without a GPU).
#
#   scripts/build_cuda.sh [--check] [--compute-cap 80] [--release|--dev] [-- EXTRA CARGO ARGS]
#
# NVIDIA publishes its compiler, headers and libraries on PyPI as ordinary wheels
# (nvidia-cuda-nvcc-cu12, nvidia-cuda-runtime-cu12, ...). This script installs the pinned ones into
# a project-local prefix ($AURIS_CUDA_PREFIX, default .cuda/), arranges them as the usual toolkit
# layout (bin/nvcc, include/, lib64/) so that candle's build finds them, and runs
# `cargo build --features cuda` (or `cargo check` with --check). What candle's build needs:
#   - nvcc on PATH: candle-kernels compiles its .cu files to PTX and a static library of the GGUF
#     kernels (cudaforge), and cudarc asks `nvcc --version` for the toolkit version;
#   - CUDA_COMPUTE_CAP, since there is no GPU to ask (default 80 = Ampere; 90 = Hopper, 89 = Ada).
#     The PTX is JIT-compiled by the driver for newer GPUs, so 80 runs on A100, H100 and H200;
#   - the CUDA libraries at link time: candle-kernels links libcudart (from the runtime wheel),
#     and cudarc, as candle configures it (`dynamic-linking`), links libcuda (the driver), cuBLAS,
#     cuBLASLt, cuRAND and NVRTC. Those are not needed to compile, only to run, so instead of
#     ~1 GB of wheels the full build links against stub libraries made here from the symbols
#     cudarc references (what the toolkit's own lib64/stubs/libcuda.so is for). The binary then
#     needs, on the GPU machine: a driver from 580 on (libcuda.so.1) and the CUDA 13 libraries
#     libcudart.so.13, libcublas.so.13, libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13 on
#     the loader's path (a CUDA 13 toolkit, or the wheels nvidia-cublas, nvidia-curand,
#     nvidia-cuda-nvrtc, nvidia-cuda-runtime).
#
# A user with a real CUDA toolkit does not need this script: with nvcc on PATH,
#   CUDA_COMPUTE_CAP=<cap> cargo build --release --features cuda
# (without CUDA_COMPUTE_CAP, candle asks nvidia-smi for the GPU's).
#
# Prints the binary's path and the time the build took. Exit status: cargo's.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX="${AURIS_CUDA_PREFIX:-$ROOT/.cuda}"
CAP="${CUDA_COMPUTE_CAP:-80}"
MODE=build
PROFILE=--release
EXTRA=()

# CUDA 13.0 (the 12.x wheels on PyPI carry ptxas but not nvcc itself). 13.0 is the oldest
# toolkit published complete as wheels; its code runs on drivers from 580 on and GPUs from sm_75
# (Turing) on. cudarc (candle's CUDA crate) knows toolkits up to 13.4.
CUDA_WHEELS=(
  "nvidia-cuda-nvcc==13.0.88"
  "nvidia-cuda-crt==13.0.88"
  "nvidia-nvvm==13.0.88"
  "nvidia-cuda-runtime==13.0.96"
  "nvidia-cuda-cccl==13.0.85"
)
usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --check) MODE=check ;;
    --compute-cap) CAP="${2:?--compute-cap needs a value, e.g. 80}"; shift ;;
    --release) PROFILE=--release ;;
    --dev) PROFILE= ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "build_cuda.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$CAP" in
  ''|*[!0-9]*) echo "build_cuda.sh: --compute-cap must be a number such as 80 or 90, not '$CAP'" >&2; exit 2 ;;
esac

# Installs the wheels once; a stamp file records the pins so that a change of pins reinstalls.
install_toolkit() {
  local stamp="$PREFIX/.pins" want
  want="$(printf '%s\n' "${CUDA_WHEELS[@]}")"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$PREFIX/cuda/bin/nvcc" ]; then
    return
  fi
  echo "installing the CUDA compiler and headers from PyPI into $PREFIX" >&2
  rm -rf "$PREFIX"
  mkdir -p "$PREFIX"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$PREFIX/site" "${CUDA_WHEELS[@]}"
  assemble_layout
  printf '%s\n' "$want" >"$stamp"
}

# The CUDA 13 wheels share one toolkit tree, site/nvidia/cu13/{bin,include,lib,nvvm}; it lacks
# only the unversioned libcudart.so the linker looks for, and the lib64/ name some builds expect.
assemble_layout() {
  local tk="$PREFIX/site/nvidia/cu13"
  ln -sfn "$tk" "$PREFIX/cuda"
  [ -e "$tk/lib64" ] || ln -sfn lib "$tk/lib64"
  if [ ! -e "$tk/lib/libcudart.so" ]; then
    ln -sfn "$(basename "$(ls "$tk"/lib/libcudart.so.* | head -n1)")" "$tk/lib/libcudart.so"
  fi
}

install_toolkit
TK="$PREFIX/cuda"
export CUDA_HOME="$TK" CUDA_PATH="$TK" NVCC="$TK/bin/nvcc" CUDA_COMPUTE_CAP="$CAP"
export PATH="$TK/bin:$PATH"
export LIBRARY_PATH="$TK/lib64${LIBRARY_PATH:+:$LIBRARY_PATH}"
export LD_LIBRARY_PATH="$TK/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# A separate target folder: the CUDA build recompiles candle with other features, which would
# otherwise evict the CPU build's artefacts.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/cuda}"
nvcc --version | tail -n 2 >&2

# Link-time stand-ins for the driver and the libraries cudarc links (see the top of this file):
# one function per symbol that cudarc's object code references, under the real libraries'
# sonames, so that the binary loads the real ones at run time. Each returns an error status
# (CUDA_ERROR_NO_DEVICE = 100 for the driver, 1 = "not initialised" for the others), so the
# binary run with the stubs on its library path behaves as on a machine without a GPU: the CPU
# works and `--device cuda` reports that no device was found. Needs cudarc compiled first.
make_link_stubs() {
  local stubs="$PREFIX/stubs" rlib lib soname prefix syms
  rlib="$(ls -t "$CARGO_TARGET_DIR"/"$1"/deps/libcudarc-*.rlib | head -n1)"
  mkdir -p "$stubs"
  syms="$(nm -u "$rlib" 2>/dev/null | awk '{print $2}' | sort -u)"
  for lib in cuda:libcuda.so.1:cu:100 nvrtc:libnvrtc.so.13:nvrtc:1 curand:libcurand.so.10:curand:1 \
             cublasLt:libcublasLt.so.13:cublasLt:1 cublas:libcublas.so.13:cublas:1; do
    IFS=: read -r name soname prefix status <<<"$lib"
    grep -E "^${prefix}" <<<"$syms" | grep -vE "$(stub_exclusions "$name")" \
      | sed "s/.*/int &(void) { return $status; }/" >"$stubs/$name.c"
    gcc -shared -fPIC -Wl,-soname,"$soname" -o "$stubs/lib$name.so" "$stubs/$name.c"
    ln -sfn "lib$name.so" "$stubs/$soname"
  done
  export LIBRARY_PATH="$stubs:$LIBRARY_PATH"
}

# Symbols of one prefix that belong to another library (cu* covers all of them).
stub_exclusions() {
  case "$1" in
    cuda) echo '^(cublas|curand|cudnn|cufft|cusparse|cusolver|cutensor|cupti)' ;;
    cublas) echo '^cublasLt' ;;
    *) echo '^$' ;;
  esac
}

start=$(date +%s)
cd "$ROOT"
if [ "$MODE" = build ]; then
  dir=debug; [ "$PROFILE" = --release ] && dir=release
  # The library first (no linking), which compiles cudarc, whose symbols the stubs provide.
  # shellcheck disable=SC2086
  cargo build --locked $PROFILE --features cuda --lib "${EXTRA[@]}"
  make_link_stubs "$dir"
fi
# shellcheck disable=SC2086 # PROFILE is empty or one flag
cargo "$MODE" --locked $PROFILE --features cuda --bin auris "${EXTRA[@]}"
elapsed=$(( $(date +%s) - start ))
if [ "$MODE" = build ]; then
  # What a GPU machine needs besides its driver and CUDA libraries, small enough to carry: the
  # stripped binary (about 70 MB, 19 MB compressed) and the CUDA runtime it was linked with.
  bundle="$CARGO_TARGET_DIR/gpu-bundle"
  mkdir -p "$bundle"
  strip -o "$bundle/auris" "$CARGO_TARGET_DIR/$dir/auris"
  gzip -f "$bundle/auris"
  cp -L "$TK"/lib/libcudart.so.13 "$bundle/"
  echo "bundle for a GPU machine: $bundle ($(du -sh "$bundle" | cut -f1); scripts/gpu_check.sh --bundle $bundle)" >&2
  echo "built $CARGO_TARGET_DIR/$dir/auris (CUDA, compute capability $CAP) in ${elapsed}s" >&2
else
  echo "checked the CUDA build (compute capability $CAP) in ${elapsed}s" >&2
fi
