#!/usr/bin/env bash
# Per thread of aotel at saturation: bytes handed to write(), write calls, user and system CPU (ticks of
# 10 ms), and the group commits made. Usage: [STOP=KILL] scripts/perf/threads.sh [SECONDS]
# (STOP=KILL leaves the WAL for scripts/perf/walmap.py)
source "$(dirname "$0")/common.sh"
start_aotel
load "${1:-8}"
curl -s 127.0.0.1:18765/metrics | grep -E '^aotel_commit_duration_seconds_count'
for t in /proc/$PID/task/*; do
  printf '%-16s %s utime %s stime %s\n' "$(cat "$t/comm")" \
    "$(grep -E '^(wchar|syscw)' "$t/io" | tr '\n' ' ')" \
    "$(awk '{print $14}' "$t/stat")" "$(awk '{print $15}' "$t/stat")"
done | sort
stop_aotel "${STOP:-TERM}"
ls -l "$WORK"
