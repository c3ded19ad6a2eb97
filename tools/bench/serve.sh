#!/usr/bin/env bash
# Serving throughput under concurrent clients, side by side in one command:
# llama.cpp's llama-server (continuous batching, N parallel slots) against
# `hypertensor serve`, then the same clients through a swarm of three
# 10-block servers behind a `node --role client` gateway.
#
# usage: tools/bench/serve.sh [--clients "1 4 16 32"] [--tokens 128]
#                             [--threads 2] [--no-swarm]
#
# For each N, N streaming clients start at once, each asking for --tokens
# greedy tokens on a short prompt of its own (tools/bench/serve_load.py);
# each server gets one warm-up request first. llama-server is built from
# the llama.cpp sources of the pinned llama-cpp-python sdist (see
# tools/bench/llama-bench.sh) and run as `-np N -cb -c N*512 -t THREADS`;
# ours with RAYON_NUM_THREADS=THREADS. The engine's own pp128 prefill rate
# (`hypertensor bench`, the arithmetic ceiling of batched decoding) is
# measured in the same run. Prints a table; JSON goes to
# $CARGO_TARGET_DIR/bench/serve.json (default target/bench/serve.json).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CLIENTS="1 4 16 32"
TOKENS=128
THREADS=2
SWARM=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --clients) CLIENTS="$2"; shift 2 ;;
        --tokens) TOKENS="$2"; shift 2 ;;
        --threads) THREADS="$2"; shift 2 ;;
        --no-swarm) SWARM=0; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$TARGET/bench/serve"
mkdir -p "$OUT"
rm -f "$OUT"/*.json
cargo build --release --quiet -p hypertensor-cli --manifest-path "$ROOT/Cargo.toml"
HT="$TARGET/release/hypertensor"
MODEL="$("$HT" model fetch --quiet)"
LLAMA_SERVER="$("$ROOT/tools/bench/llama-bench.sh" --build-only | sed 's/llama-bench$/llama-server/')"
LOAD=(python3 "$ROOT/tools/bench/serve_load.py" --tokens "$TOKENS")

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until GET $1 answers 200 (up to 120 s).
wait_http() {
    for _ in $(seq 1 600); do
        if python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    echo "no answer from $1" >&2
    return 1
}

stop_all() {
    cleanup
    PIDS=()
}

# run_load LABEL URL N: a warm-up request, then N clients; JSON to $OUT.
run_load() {
    local label="$1" url="$2" n="$3"
    "${LOAD[@]}" --url "$url" --clients 1 --tokens 8 --first 1000 --label warmup >/dev/null
    echo "[serve-bench] $label: $n clients" >&2
    "${LOAD[@]}" --url "$url" --clients "$n" --label "$label" >"$OUT/$label-$n.json"
    cat "$OUT/$label-$n.json" >&2
}

echo "[serve-bench] the engine's own prefill rate (pp128)" >&2
RAYON_NUM_THREADS="$THREADS" "$HT" bench --model "$MODEL" --prompt-tokens 128 --gen-tokens 16 \
    --repetitions 3 --json "$OUT/prefill.json" >&2

for n in $CLIENTS; do
    port="$(free_port)"
    "$LLAMA_SERVER" -m "$MODEL" -t "$THREADS" -tb "$THREADS" -np "$n" -cb -c $((n * 512)) \
        --host 127.0.0.1 --port "$port" >"$OUT/llama-server-$n.log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$port/health"
    run_load llama-server "http://127.0.0.1:$port/v1" "$n"
    stop_all

    port="$(free_port)"
    RAYON_NUM_THREADS="$THREADS" "$HT" serve --model "$MODEL" --addr "127.0.0.1:$port" \
        >"$OUT/serve-$n.log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$port/v1/models"
    run_load serve "http://127.0.0.1:$port/v1" "$n"
    stop_all
done

if [[ "$SWARM" == 1 ]]; then
    echo "[serve-bench] starting three 10-block servers and a gateway" >&2
    log="$OUT/hoster-0.log"
    RAYON_NUM_THREADS="$THREADS" "$HT" node --role hoster --blocks 0:10 --model "$MODEL" \
        --listen /ip4/127.0.0.1/tcp/0 >"$log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 600); do grep -q "^listening on " "$log" && break; sleep 0.2; done
    boot="$(grep -m1 "^listening on " "$log" | sed 's/^listening on //')"
    for span in 10:20 20:30; do
        RAYON_NUM_THREADS="$THREADS" "$HT" node --role hoster --blocks "$span" --model "$MODEL" \
            --listen /ip4/127.0.0.1/tcp/0 --bootstrap "$boot" >"$OUT/hoster-$span.log" 2>&1 &
        PIDS+=($!)
    done
    port="$(free_port)"
    RAYON_NUM_THREADS="$THREADS" "$HT" node --role client --model "$MODEL" \
        --listen /ip4/127.0.0.1/tcp/0 --bootstrap "$boot" --api "127.0.0.1:$port" \
        >"$OUT/gateway.log" 2>&1 &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$port/v1/models"
    # Until every block is announced the gateway answers 503.
    for _ in $(seq 1 300); do
        "${LOAD[@]}" --url "http://127.0.0.1:$port/v1" --clients 1 --tokens 2 --first 2000 --label probe \
            | python3 -c 'import json, sys; sys.exit(json.load(sys.stdin)["errors"])' && break
        sleep 0.5
    done
    for n in $CLIENTS; do
        run_load swarm "http://127.0.0.1:$port/v1" "$n"
    done
    stop_all
fi

python3 - "$OUT" "$CLIENTS" "$TOKENS" "$THREADS" "$MODEL" "$TARGET/bench/serve.json" <<'PY'
import json, os, sys
out, clients, tokens, threads, model, dest = sys.argv[1:7]
clients = [int(c) for c in clients.split()]
prefill = [e for e in json.load(open(f"{out}/prefill.json")) if e["test"].startswith("pp")][0]
pp = prefill["tokens_per_second_mean"]
def load(label, n):
    path = f"{out}/{label}-{n}.json"
    return json.load(open(path)) if os.path.exists(path) else None
rows = []
print(f"model: {model}\nthreads: {threads}, {tokens} tokens per client\n"
      f"engine prefill (pp128): {pp:.1f} t/s; goal at 16 clients: >= {0.8 * pp:.1f} t/s\n")
print("| N | server | aggregate t/s | TTFT p50 / p99 ms | ITL p50 / p99 ms | tokens/client | errors |")
print("|---|---|---|---|---|---|---|")
for n in clients:
    for label in ("llama-server", "serve", "swarm"):
        r = load(label, n)
        if r is None:
            continue
        rows.append(r)
        f = lambda v: "-" if v is None else f"{v:.1f}"
        print(f"| {n} | {label} | {r['aggregate_tps']:.1f} | {f(r['ttft_ms']['p50'])} / {f(r['ttft_ms']['p99'])} "
              f"| {f(r['itl_ms']['p50'])} / {f(r['itl_ms']['p99'])} | {r['tokens']['mean']:.0f} | {r['errors']} |")
print()
for n in clients:
    ours, base, swarm = load("serve", n), load("llama-server", n), load("swarm", n)
    parts = [f"N={n}:"]
    if ours and base:
        parts.append(f"serve/llama-server {ours['aggregate_tps'] / base['aggregate_tps']:.2f} (goal >= 1.0)")
    if ours and n == 16:
        parts.append(f"serve/pp128 {ours['aggregate_tps'] / pp:.2f} (goal >= 0.8)")
    if ours and swarm:
        parts.append(f"swarm/serve {swarm['aggregate_tps'] / ours['aggregate_tps']:.2f} (goal >= 0.8)")
    print("  ".join(parts))
json.dump({"model": model, "threads": int(threads), "tokens": int(tokens),
           "prefill_pp128_tps": pp, "runs": rows}, open(dest, "w"), indent=1)
PY
