#!/usr/bin/env bash
# Bytes written per span at a modest rate on a store that saturation filled first.
# Usage: scripts/perf/bytes-at-rate.sh [FILL_SECONDS] [RATE] [SECONDS]
source "$(dirname "$0")/common.sh"
start_aotel
load "${1:-8}"
sleep 3
before=$(written)
out=$(load "${3:-10}" "${2:-2000}")
sleep 1
after=$(written)
echo "$out"
spans=$(grep -o '([0-9]* spans' <<<"$out" | tr -dc 0-9)
echo "$spans spans at ${2:-2000}/s: $(( (after - before) / spans )) bytes written per span"
stop_aotel
