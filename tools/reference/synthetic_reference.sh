#!/usr/bin/env bash
# Records llama.cpp on the synthetic Qwen 2 model that
# crates/model/tests/engine/synthetic.rs writes (seeded random weights in
# every native type, the default model's vocabulary with the qwen2
# pre-tokenizer), into crates/model/tests/fixtures/synthetic_reference.json.
#
# usage: tools/reference/synthetic_reference.sh
#
# The test writes the file where HYPERTENSOR_SYNTHETIC_OUT says before it
# checks anything (its sha256 check fails until the fixture is remade,
# which is what this script is for); then gguf_reference.py runs llama.cpp
# on it. The model file stays in the cache, not in the repository.
set -euo pipefail
REF_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$REF_DIR/../.." && pwd)"
source "$REF_DIR/env.sh"
OUT="$HT_HOME/reference/synthetic"
mkdir -p "$OUT"
FILE="$OUT/synthetic-qwen2.gguf"
rm -f "$FILE"
HYPERTENSOR_SYNTHETIC_OUT="$FILE" cargo test --quiet --manifest-path "$ROOT/Cargo.toml" \
    -p hypertensor-model --test engine synthetic >/dev/null 2>&1 || true
[[ -f "$FILE" ]] || { ht_log "the test did not write $FILE"; exit 1; }
python3 "$REF_DIR/gguf_reference.py" --out "$ROOT/crates/model/tests/fixtures/synthetic_reference.json" \
    "qwen2-synthetic=$FILE"
