# Shared by the perf scripts: a release aotel on spare ports with a fresh database, and the ingest
# benchmark's load generator pointed at it (AOTEL_BENCH_TARGET). Sourced, not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${AOTEL_BIN:-$ROOT/target/release/aotel}"
WORK="${WORK:-/tmp/aotel-perf}"
LOAD="$(ls -t "$ROOT"/target/release/deps/ingest-* 2>/dev/null | grep -v '\.d$' | head -1 || true)"
if [ ! -x "$BIN" ] || [ -z "$LOAD" ]; then
  echo "build first: cargo build --release --bin aotel --bench ingest" >&2
  exit 1
fi
start_aotel() {
  rm -rf "$WORK"; mkdir -p "$WORK"
  "$BIN" --db "$WORK/perf.db" --grpc 127.0.0.1:14317 --http 127.0.0.1:14318 --api 127.0.0.1:18765 \
    >"$WORK/aotel.log" 2>&1 &
  PID=$!
  for _ in $(seq 50); do curl -sf 127.0.0.1:18765/readyz >/dev/null && return; sleep 0.1; done
  echo "aotel did not start: $(cat "$WORK/aotel.log")" >&2; exit 1
}
# load SECONDS [RATE]: max rate without RATE; prints the load generator's summary line.
load() {
  AOTEL_BENCH_TARGET=14317,14318 "$LOAD" --seconds "$1" ${2:+--rate "$2"} | tail -1
}
# Bytes aotel handed to write(), all threads (dead ones included).
written() { awk '/^wchar/{print $2}' "/proc/$PID/io"; }
stop_aotel() { kill -"${1:-TERM}" "$PID"; { wait "$PID" || true; } 2>/dev/null; }
