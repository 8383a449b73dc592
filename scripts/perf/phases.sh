#!/usr/bin/env bash
# Saturation in consecutive phases on one growing store: how the rate holds up as the store grows.
# Usage: scripts/perf/phases.sh [PHASES] [SECONDS]
source "$(dirname "$0")/common.sh"
start_aotel
for i in $(seq "${1:-6}"); do echo "phase $i: $(load "${2:-10}")"; done
stop_aotel
