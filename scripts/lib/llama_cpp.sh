# llama.cpp as the pinned llama-cpp-python sdist vendors it (sourced, not run): the sdist is the
# source of llama-cpp-python's own build, of the GGUF converter (convert_hf_to_gguf.py) and of
# llama-server (tools/server, with tools/mtmd for audio).
#
# LLAMA_CPP_PYTHON and GGUF_PINS: the pins.
# llama_cpp_sdist PIP DIR: downloads the sdist into DIR with PIP and unpacks it there, each
#   once; sets SDIST (the archive) and LLAMA_DIR (its vendor/llama.cpp).
# llama_server_build DIR: builds the llama-server target alone from $LLAMA_DIR (cmake, Release,
#   GGML_NATIVE: the best SIMD this CPU has, as a user building llama.cpp here would get; no
#   web UI, no HTTPS) into DIR/llama-server-build, once; sets LLAMA_SERVER. 75 minutes on 2 cores
#   shared with other builds; the log is DIR/llama-server-build.log.

LLAMA_CPP_PYTHON="llama-cpp-python==0.3.36"
# What the converter imports besides torch and transformers (scripts/lib/convert_gguf.py).
GGUF_PINS=("gguf==0.19.0" "sentencepiece==0.2.3")

llama_cpp_sdist() {
  local pip="$1" dir="$2" version="${LLAMA_CPP_PYTHON##*==}"
  SDIST="$dir/llama_cpp_python-$version.tar.gz"
  LLAMA_DIR="$dir/llama_cpp_python-$version/vendor/llama.cpp"
  mkdir -p "$dir"
  if [[ ! -f "$SDIST" ]]; then
    echo "downloading the $LLAMA_CPP_PYTHON sdist" >&2
    "$pip" download --quiet --no-deps --no-binary llama-cpp-python -d "$dir" "$LLAMA_CPP_PYTHON"
  fi
  if [[ ! -f "$LLAMA_DIR/convert_hf_to_gguf.py" ]]; then
    tar -xzf "$SDIST" -C "$dir"
  fi
}

llama_server_build() {
  local build="$1/llama-server-build" log="$1/llama-server-build.log" start=$SECONDS
  LLAMA_SERVER="$build/bin/llama-server"
  [[ -x "$LLAMA_SERVER" ]] && return 0
  command -v cmake >/dev/null || { echo "llama-server needs cmake (apt-get install cmake)" >&2; return 1; }
  echo "building llama-server from $LLAMA_DIR (log: $log)" >&2
  {
    cmake -S "$LLAMA_DIR" -B "$build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
      -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
      -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
      && cmake --build "$build" --target llama-server -j "$(nproc)"
  } >"$log" 2>&1 || { tail -n 30 "$log" >&2; return 1; }
  echo "built llama-server in $((SECONDS - start)) s" >&2
}
