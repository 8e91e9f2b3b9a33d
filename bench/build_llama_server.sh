#!/usr/bin/env bash
# Build llama.cpp's C++ `llama-server` (continuous batching: `--parallel N -cb`) from the llama.cpp
# sources vendored in the llama-cpp-python sdist, so that the engine matches the llama.cpp version
# the Python bindings (and `python -m llama_cpp.server`) use. No network beyond PyPI is needed: the
# web UI is left out (no npm build, no download of prebuilt assets).
#
#   bench/build_llama_server.sh [PREFIX]       # default PREFIX: /work/llama-server
#   LLAMA_SERVER=PREFIX/bin/llama-server python bench/rollout.py
#
# About 10 minutes of compiling on 2 busy cores (only the llama-server target is built).
set -euo pipefail

PREFIX=${1:-/work/llama-server}
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
PIP=${PIP:-/work/venv/bin/pip}
JOBS=${JOBS:-$(nproc)}

mkdir -p "$PREFIX/src" "$PREFIX/bin"
cd "$PREFIX/src"
if [ ! -f "llama_cpp_python-$VERSION.tar.gz" ]; then
    "$PIP" download --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d .
fi
if [ ! -d "llama_cpp_python-$VERSION" ]; then
    tar xzf "llama_cpp_python-$VERSION.tar.gz"
fi
SRC="$PREFIX/src/llama_cpp_python-$VERSION/vendor/llama.cpp"

generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
cmake -S "$SRC" -B "$PREFIX/build" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON \
    -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_COMMON=ON \
    -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_UI=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF \
    -DLLAMA_OPENSSL=OFF
cmake --build "$PREFIX/build" --target llama-server -j "$JOBS"
cp "$PREFIX/build/bin/llama-server" "$PREFIX/bin/llama-server"
"$PREFIX/bin/llama-server" --version
echo "built $PREFIX/bin/llama-server"
