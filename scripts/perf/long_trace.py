"""REQUESTS sequential OTLP/JSON exports of 100 spans each, all of one trace, to aotel's OTLP/HTTP port.

Usage: python3 long_trace.py HTTP_PORT REQUESTS (see long-trace.sh)."""
import json
import sys
import time
import urllib.request

port, n, per = int(sys.argv[1]), int(sys.argv[2]), 100
trace = "ab" * 16
start, latencies = time.time(), []
for r in range(n):
    spans = [
        {
            "traceId": trace,
            "spanId": "%016x" % (r * per + i + 1),
            "name": "execute_tool Bash",
            "startTimeUnixNano": str(1_700_000_000_000_000_000 + r * per + i),
            "endTimeUnixNano": str(1_700_000_000_000_000_000 + r * per + i + 1000),
            "attributes": [{"key": "gen_ai.conversation.id", "value": {"stringValue": "long"}}],
        }
        for i in range(per)
    ]
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()
    req = urllib.request.Request(
        "http://127.0.0.1:%d/v1/traces" % port, data=body, headers={"content-type": "application/json"}
    )
    t = time.time()
    urllib.request.urlopen(req).read()
    latencies.append(time.time() - t)
last = latencies[-50:]
print(
    "%d requests of %d spans into one trace: %.2f s; the last %d: mean %.2f ms"
    % (n, per, time.time() - start, len(last), 1000 * sum(last) / len(last))
)
