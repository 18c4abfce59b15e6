#!/usr/bin/env bash
# Real-time replay of a long-form stream through a fresh `wlk` server (LocalAgreement policy).
# Usage: benchmarks/run_localagreement.sh MODEL [SET] [extra wlk flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-tiny.en}; set_name=${2:-en/hifitts_6097}; shift $(( $# > 2 ? 2 : $# ))
port=$((20000 + RANDOM % 10000))
out="benchmarks/results/localagreement-${model}-$(basename "$set_name").json"
.venv/bin/wlk --model "$model" --pcm-input --port "$port" --log-level WARNING "$@" &
server=$!
trap 'kill $server 2>/dev/null' EXIT
until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 1; done
.venv/bin/python benchmarks/stream_bench.py --url "ws://127.0.0.1:$port/asr" --set "$set_name" \
    --model "$model" --server-pid "$server" --json "$out"
