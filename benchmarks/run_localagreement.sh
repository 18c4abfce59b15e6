#!/usr/bin/env bash
# Real-time replay of a long-form stream through a fresh server (LocalAgreement policy): `wlk bench` does it all.
# Usage: benchmarks/run_localagreement.sh MODEL [SET] [more wlk bench flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-tiny.en}; set_name=${2:-en/hifitts_6097}; shift $(( $# > 2 ? 2 : $# ))
exec .venv/bin/python -m whisperlivekit.bench.cli --model "$model" --policy localagreement --set "$set_name" \
    --json "benchmarks/results/localagreement-${model}-$(basename "$set_name").json" "$@"
