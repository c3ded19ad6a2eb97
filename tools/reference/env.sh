# shellcheck shell=bash
# Shared setup for the reference scripts (tools/reference) and the llama.cpp
# baseline (tools/bench). Source it; it defines functions and sets nothing
# else but the variables below.
#
#   HT_HOME        per-user cache: $HYPERTENSOR_HOME, else
#                  ${XDG_CACHE_HOME:-~/.cache}/hypertensor
#   HT_VENV        the Python venv with the pinned packages
#   LLAMA_VERSION  the llama-cpp-python release whose vendored llama.cpp we
#                  use as the reference engine and benchmark baseline
#
# Nothing from llama.cpp is ever written into the repository: the sdist, its
# builds and the venv all live under $HT_HOME.
#
# Functions (all idempotent; each skips work already done):
#   ht_base_venv       venv with requirements.txt installed (wheels only)
#   ht_llama_sdist     prints the path of the sha256-checked sdist
#   ht_full_venv       base venv + llama-cpp-python built from that sdist
#   ht_log MSG         progress message on stderr

set -euo pipefail

HT_REFERENCE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HT_HOME="${HYPERTENSOR_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/hypertensor}"
HT_VENV="$HT_HOME/venv"
LLAMA_VERSION="0.3.36"
# sha256 of llama_cpp_python-0.3.36.tar.gz as served by PyPI
# (files.pythonhosted.org/packages/ec/e9/e7de2b04.../llama_cpp_python-0.3.36.tar.gz).
LLAMA_SDIST_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_DIR="$HT_HOME/llama.cpp/$LLAMA_VERSION"
# Compile with two jobs: the machine has two cores shared with other work.
HT_BUILD_JOBS="${HT_BUILD_JOBS:-2}"

ht_log() {
    printf '[hypertensor-ref] %s\n' "$*" >&2
}

# Creates the venv (python3 -m venv) and installs the pinned requirements.
# A stamp file holding the hash of requirements.txt makes reruns free.
ht_base_venv() {
    local req="$HT_REFERENCE_DIR/requirements.txt"
    local stamp="$HT_VENV/.hypertensor-base"
    local want
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    if [[ ! -x "$HT_VENV/bin/python" ]]; then
        ht_log "creating venv $HT_VENV"
        mkdir -p "$HT_HOME"
        python3 -m venv "$HT_VENV"
    fi
    ht_log "installing pinned packages from $req"
    "$HT_VENV/bin/python" -m pip install --quiet -r "$req" >&2
    echo "$want" >"$stamp"
}

# Downloads the llama-cpp-python sdist from PyPI once, checks its sha256
# against the pinned value and prints its path.
ht_llama_sdist() {
    ht_base_venv
    local dir="$LLAMA_DIR/sdist"
    local file="$dir/llama_cpp_python-$LLAMA_VERSION.tar.gz"
    if [[ ! -f "$file" ]]; then
        ht_log "downloading llama-cpp-python==$LLAMA_VERSION sdist from PyPI"
        mkdir -p "$dir"
        local tmp
        tmp="$(mktemp -d "$dir/.download.XXXXXX")"
        "$HT_VENV/bin/python" -m pip download --quiet --no-deps --no-binary :all: \
            --no-build-isolation "llama-cpp-python==$LLAMA_VERSION" -d "$tmp" >&2
        mv "$tmp/llama_cpp_python-$LLAMA_VERSION.tar.gz" "$file"
        rm -rf "$tmp"
    fi
    local got
    got="$(sha256sum "$file" | cut -d' ' -f1)"
    if [[ "$got" != "$LLAMA_SDIST_SHA256" ]]; then
        ht_log "sha256 mismatch for $file: got $got, want $LLAMA_SDIST_SHA256"
        ht_log "delete the file and run again to re-download it"
        return 1
    fi
    echo "$file"
}

# CMake flags for ggml: every SIMD extension this CPU lists in /proc/cpuinfo
# (what GGML_NATIVE=ON would pick), except AMX. Firecracker VMs such as
# this project's CI list amx_tile/amx_int8 but fault on the first AMX
# instruction (ldtilecfg: general protection fault in ggml's AMX matmul),
# so a native build crashes on its first product; without AMX, ggml uses
# its AVX-512 VNNI kernels, its fastest path on these machines.
ht_ggml_cmake_flags() {
    local flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
    local out="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
    local pair feature option
    for pair in sse4_2:SSE42 f16c:F16C fma:FMA bmi2:BMI2 avx:AVX avx2:AVX2 \
        avx_vnni:AVX_VNNI avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI \
        avx512_bf16:AVX512_BF16; do
        feature="${pair%%:*}"
        option="${pair##*:}"
        if [[ "$flags" == *" $feature "* ]]; then
            out+=" -DGGML_$option=ON"
        else
            out+=" -DGGML_$option=OFF"
        fi
    done
    if [[ "$flags" == *" avx512f "* && "$flags" == *" avx512bw "* && "$flags" == *" avx512vl "* \
        && "$flags" == *" avx512dq "* && "$flags" == *" avx512cd "* ]]; then
        out+=" -DGGML_AVX512=ON"
    else
        out+=" -DGGML_AVX512=OFF"
    fi
    echo "$out"
}

# The base venv plus llama-cpp-python compiled from the checked sdist with
# this CPU's SIMD extensions (ht_ggml_cmake_flags), two build jobs.
ht_full_venv() {
    ht_base_venv
    local stamp="$HT_VENV/.hypertensor-llama"
    local want
    want="$LLAMA_SDIST_SHA256 $(ht_ggml_cmake_flags)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return 0
    fi
    local sdist
    sdist="$(ht_llama_sdist)"
    ht_log "building llama-cpp-python $LLAMA_VERSION from source (several minutes)"
    CMAKE_ARGS="$(ht_ggml_cmake_flags)" \
        CMAKE_BUILD_PARALLEL_LEVEL="$HT_BUILD_JOBS" \
        PATH="$HT_VENV/bin:$PATH" \
        "$HT_VENV/bin/python" -m pip install --no-deps --no-build-isolation \
        --no-cache-dir --force-reinstall "$sdist" >&2
    echo "$want" >"$stamp"
}
