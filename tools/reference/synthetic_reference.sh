#!/usr/bin/env bash
# Records llama.cpp on the synthetic models that
# crates/model/tests/engine/synthetic.rs writes (seeded random weights in
# every native type over the default model's vocabulary: a Qwen 2 with the
# qwen2 pre-tokenizer, and a Llama 3 with rope_freqs, llama-bpe and
# <|eot_id|>), into crates/model/tests/fixtures/synthetic_reference.json.
#
# usage: tools/reference/synthetic_reference.sh
#
# The tests write the files into the directory HYPERTENSOR_SYNTHETIC_OUT
# names before they check anything (their sha256 checks fail until the
# fixture is remade, which is what this script is for); then
# gguf_reference.py runs llama.cpp on them. The model files stay in the
# cache, not in the repository.
set -euo pipefail
REF_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$REF_DIR/../.." && pwd)"
source "$REF_DIR/env.sh"
OUT="$HT_HOME/reference/synthetic"
mkdir -p "$OUT"
rm -f "$OUT"/synthetic-*.gguf
HYPERTENSOR_SYNTHETIC_OUT="$OUT" cargo test --quiet --manifest-path "$ROOT/Cargo.toml" \
    -p hypertensor-model --test engine synthetic >/dev/null 2>&1 || true
for flavor in qwen2 llama3; do
    [[ -f "$OUT/synthetic-$flavor.gguf" ]] || { ht_log "the tests did not write synthetic-$flavor.gguf"; exit 1; }
done
python3 "$REF_DIR/gguf_reference.py" --out "$ROOT/crates/model/tests/fixtures/synthetic_reference.json" \
    "qwen2-synthetic=$OUT/synthetic-qwen2.gguf" "llama3-synthetic=$OUT/synthetic-llama3.gguf"
