#!/usr/bin/env bash
# One trace written by many requests, one after another (an agent run exported in batches for a long
# time): how long they take, and the mean latency of the last 50. The writer recognises a copy by the
# span ids of the traces it writes; this shows whether that stays cheap as the trace grows.
# Usage: scripts/perf/long-trace.sh [REQUESTS] (100 spans each; default 1000)
source "$(dirname "$0")/common.sh"
start_aotel
python3 "$(dirname "$0")/long_trace.py" 14318 "${1:-1000}"
stop_aotel
