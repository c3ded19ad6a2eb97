#!/usr/bin/env bash
# Makes the quantized reference files of the default model with llama.cpp's
# llama-quantize: one GGUF per type a node operator is likely to download.
#
# usage: tools/reference/quantize.sh [--model GGUF] [TYPE...]
#
# TYPEs are llama-quantize's names, or NAME-pure for `--pure` (every
# tensor in that type where its width allows, not llama.cpp's mix); the
# default list is
#   F16 BF16 Q8_0 Q6_K Q5_K_M Q4_K_M Q3_K_M Q2_K Q2_K-pure Q5_0 Q5_1
# (Q2_K's mix holds Q3_K down-projections and no Q2_K tensor at this width;
# Q2_K-pure has Q2_K ones).
# Files go to $HT_HOME/reference/quantized/<model stem>.<TYPE>.gguf (made once;
# delete one to remake it) and their paths are printed on stdout, one per
# line. The default model is Q4_1, so every file is a requantization
# (`--allow-requantize`): the weights carry Q4_1's rounding plus the new
# type's, which is fine for checking kernels and speed, not for judging the
# model's quality. llama-quantize gives a tensor whose width is not a multiple of
# 256 (SmolLM2's 576) the nearest 32-block type instead of a K-quant, as it
# does for every model; the K-quant kernels then run on the 1536-wide
# down-projections and the head.
#
# Nothing from llama.cpp is written into the repository.
set -euo pipefail
REF_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$REF_DIR/../.." && pwd)"
source "$REF_DIR/env.sh"

MODEL=""
TYPES=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --model) MODEL="$2"; shift 2 ;;
        -*) echo "unknown argument: $1" >&2; exit 2 ;;
        *) TYPES+=("$1"); shift ;;
    esac
done
if [[ ${#TYPES[@]} -eq 0 ]]; then
    TYPES=(F16 BF16 Q8_0 Q6_K Q5_K_M Q4_K_M Q3_K_M Q2_K Q2_K-pure Q5_0 Q5_1)
fi

"$ROOT/tools/bench/llama-bench.sh" --build-only >/dev/null
QUANTIZE="$LLAMA_DIR/bin/llama-quantize"
if [[ -z "$MODEL" ]]; then
    MODEL="$(cargo run --quiet --release -p hypertensor-cli --manifest-path "$ROOT/Cargo.toml" -- model fetch --quiet)"
fi
OUT="$HT_HOME/reference/quantized"
mkdir -p "$OUT"
stem="$(basename "$MODEL" .gguf)"
stem="${stem%.Q4_1}"
for type in "${TYPES[@]}"; do
    file="$OUT/$stem.$type.gguf"
    if [[ ! -f "$file" ]]; then
        ht_log "quantizing $(basename "$MODEL") to $type"
        flags=(--allow-requantize)
        if [[ "$type" == *-pure ]]; then
            flags+=(--pure)
        fi
        "$QUANTIZE" "${flags[@]}" "$MODEL" "$file.tmp" "${type%-pure}" 2 >"$file.log" 2>&1 || {
            tail -n 20 "$file.log" >&2
            exit 1
        }
        mv "$file.tmp" "$file"
    fi
    echo "$file"
done
