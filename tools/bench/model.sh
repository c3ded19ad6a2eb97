#!/usr/bin/env bash
# Prefill and decode speed of our engine beside llama.cpp's llama-bench, on
# the same GGUF files with the same thread count, in one command.
#
# usage: tools/bench/model.sh [--threads N] [--rounds R] [--model GGUF|NAME]... [--all]
#
# --model may be given several times (a file, or a name `model fetch` knows);
# without it the default model is measured. --all measures the default
# model, every file tools/reference/quantize.sh makes from it (made first
# if missing) and Gemma 3 270M. For each file and round, `hypertensor bench`
# (pp128, tg128, 5 repetitions, with resident memory) runs and then
# llama-bench (same tests, 5 repetitions), so both see the same machine
# load. The table has one row per file with the mean over rounds; the JSON
# with every round goes to $CARGO_TARGET_DIR/bench/model.json (default
# target/bench/model.json).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
THREADS=2
ROUNDS=2
MODELS=()
ALL=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --threads) THREADS="$2"; shift 2 ;;
        --model) MODELS+=("$2"); shift 2 ;;
        --rounds) ROUNDS="$2"; shift 2 ;;
        --all) ALL=1; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$TARGET/bench"
mkdir -p "$OUT"
cargo build --release --quiet -p hypertensor-cli --manifest-path "$ROOT/Cargo.toml"
HT="$TARGET/release/hypertensor"
"$ROOT/tools/bench/llama-bench.sh" --build-only >&2

if [[ "$ALL" == 1 ]]; then
    MODELS+=("$("$HT" model fetch --quiet)")
    while read -r file; do
        MODELS+=("$file")
    done < <("$ROOT/tools/reference/quantize.sh")
    MODELS+=("$("$HT" model fetch gemma3-270m --quiet)")
fi
if [[ ${#MODELS[@]} -eq 0 ]]; then
    MODELS+=("$("$HT" model fetch --quiet)")
fi
RESOLVED=()
for model in "${MODELS[@]}"; do
    if [[ -f "$model" ]]; then
        RESOLVED+=("$model")
    else
        RESOLVED+=("$("$HT" model fetch "$model" --quiet)")
    fi
done

LIST="$OUT/model-files.txt"
: >"$LIST"
i=0
for model in "${RESOLVED[@]}"; do
    i=$((i + 1))
    echo "$i $model" >>"$LIST"
    for round in $(seq 1 "$ROUNDS"); do
        echo "[$i/${#RESOLVED[@]}] round $round: $(basename "$model")" >&2
        RAYON_NUM_THREADS="$THREADS" "$HT" bench --model "$model" --prompt-tokens 128 \
            --gen-tokens 128 --repetitions 5 --json "$OUT/ours-$i-$round.json" >&2
        "$ROOT/tools/bench/llama-bench.sh" "$model" -t "$THREADS" -p 128 -n 128 -r 5 \
            > "$OUT/llama-cpp-$i-$round.json"
    done
done

python3 - "$OUT" "$ROUNDS" "$THREADS" "$LIST" <<'PY'
import json, os, sys
out, rounds, threads, listing = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
files = [line.split(" ", 1) for line in open(listing).read().splitlines()]
records, table = [], []
for index, path in files:
    name = os.path.basename(path)
    per_test = {}
    for r in range(1, rounds + 1):
        for e in json.load(open(f"{out}/ours-{index}-{r}.json")):
            per_test.setdefault(e["test"], {"ours": [], "llama": [], "rss": []})
            per_test[e["test"]]["ours"].append(e["tokens_per_second_mean"])
            if e.get("resident_bytes"):
                per_test[e["test"]]["rss"].append(e["resident_bytes"] / 2**20)
            records.append({"file": name, "engine": "hypertensor", "round": r, "test": e["test"],
                            "tokens_per_second": e["tokens_per_second_mean"],
                            "stddev": e["tokens_per_second_stddev"],
                            "resident_bytes": e.get("resident_bytes")})
        for e in json.load(open(f"{out}/llama-cpp-{index}-{r}.json")):
            test = f"pp{e['n_prompt']}" if e["n_gen"] == 0 else f"tg{e['n_gen']}"
            per_test.setdefault(test, {"ours": [], "llama": [], "rss": []})
            per_test[test]["llama"].append(e["avg_ts"])
            records.append({"file": name, "engine": "llama.cpp", "round": r, "test": test,
                            "tokens_per_second": e["avg_ts"], "stddev": e["stddev_ts"]})
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
    row = [name]
    for test in ("pp128", "tg128"):
        t = per_test[test]
        row += [mean(t["ours"]), mean(t["llama"]), mean(t["ours"]) / mean(t["llama"])]
    row.append(max(per_test["tg128"]["rss"] or [float("nan")]))
    table.append(row)
print(f"threads: {threads}, rounds: {rounds} (means over rounds)\n")
print("| file | pp128 ours | pp128 llama.cpp | ratio | tg128 ours | tg128 llama.cpp | ratio | resident MiB |")
print("|---|---|---|---|---|---|---|---|")
for name, pp, ppl, ppr, tg, tgl, tgr, rss in table:
    print(f"| {name} | {pp:.1f} | {ppl:.1f} | {ppr:.2f} | {tg:.1f} | {tgl:.1f} | {tgr:.2f} | {rss:.0f} |")
json.dump({"threads": threads, "rounds": rounds, "rows": records},
          open(f"{out}/model.json", "w"), indent=2)
print(f"\nJSON: {out}/model.json")
PY
