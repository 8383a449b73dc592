#!/usr/bin/env bash
# What aotel's commits write, per table: SECONDS of saturation, then aotel killed (a clean stop would
# checkpoint and empty the WAL) and walmap.py over the WAL it left. Usage: scripts/perf/walmap.sh [SECONDS]
source "$(dirname "$0")/common.sh"
start_aotel
load "${1:-4}"
stop_aotel KILL
python3 "$(dirname "$0")/walmap.py" "$WORK/perf.db"
