#!/usr/bin/env bash
# Prefill and decode speed of our engine beside llama.cpp's llama-bench, on
# the same GGUF file with the same thread count, in one command.
#
# usage: tools/bench/model.sh [--threads N] [--model GGUF] [--rounds R]
#
# Each round runs `hypertensor bench` (pp128, tg128, 5 repetitions) and
# then llama-bench (same tests, 5 repetitions), so both see the same machine
# load; the table reports every round and the JSON goes to
# $CARGO_TARGET_DIR/bench/model.json (default target/bench/model.json).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
THREADS=2
ROUNDS=2
MODEL=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --threads) THREADS="$2"; shift 2 ;;
        --model) MODEL="$2"; shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$TARGET/bench"
mkdir -p "$OUT"
cargo build --release --quiet -p hypertensor-cli --manifest-path "$ROOT/Cargo.toml"
HT="$TARGET/release/hypertensor"
if [[ -z "$MODEL" ]]; then
    MODEL="$("$HT" model fetch --quiet)"
fi
"$ROOT/tools/bench/llama-bench.sh" --build-only >&2

for round in $(seq 1 "$ROUNDS"); do
    RAYON_NUM_THREADS="$THREADS" "$HT" bench --model "$MODEL" --prompt-tokens 128 \
        --gen-tokens 128 --repetitions 5 --json "$OUT/ours-$round.json" >&2
    "$ROOT/tools/bench/llama-bench.sh" "$MODEL" -t "$THREADS" -p 128 -n 128 -r 5 \
        > "$OUT/llama-cpp-$round.json"
done

python3 - "$OUT" "$ROUNDS" "$THREADS" "$MODEL" <<'PY'
import json, sys
out, rounds, threads, model = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rows = []
for r in range(1, rounds + 1):
    for e in json.load(open(f"{out}/ours-{r}.json")):
        rows.append(("hypertensor", r, e["test"], e["tokens_per_second_mean"], e["tokens_per_second_stddev"]))
    for e in json.load(open(f"{out}/llama-cpp-{r}.json")):
        test = f"pp{e['n_prompt']}" if e["n_gen"] == 0 else f"tg{e['n_gen']}"
        rows.append(("llama.cpp", r, test, e["avg_ts"], e["stddev_ts"]))
print(f"model: {model}\nthreads: {threads}\n")
print("| round | test  | hypertensor t/s | llama.cpp t/s | ratio |")
print("|-------|-------|-----------------|---------------|-------|")
summary = {}
for r in range(1, rounds + 1):
    for test in ("pp128", "tg128"):
        ours = [x for x in rows if x[0] == "hypertensor" and x[1] == r and x[2] == test][0]
        base = [x for x in rows if x[0] == "llama.cpp" and x[1] == r and x[2] == test][0]
        ratio = ours[3] / base[3]
        summary.setdefault(test, []).append(ratio)
        print(f"| {r:>5} | {test} | {ours[3]:>8.1f} ± {ours[4]:<5.1f} | {base[3]:>7.1f} ± {base[4]:<4.1f} | {ratio:.2f} |")
json.dump({"model": model, "threads": threads,
           "rows": [dict(zip(("engine", "round", "test", "tokens_per_second", "stddev"), x)) for x in rows]},
          open(f"{out}/model.json", "w"), indent=2)
print(f"\nJSON: {out}/model.json")
PY
