//! The collector's own health counters (in memory, per process) and the Prometheus text rendering of
//! everything `/metrics` exports. Agent-behaviour figures come from the `stats` table (store::stats).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

pub use crate::store::stats::label;

/// Counters without labels: they show 0 until their first increment, so that `rate()` and alerts on
/// them work from the first scrape.
const UNLABELLED_COUNTERS: &[&str] = &[
    "aotel_stored_spans_total",
    "aotel_stored_log_records_total",
    "aotel_commit_failures_total",
    "aotel_trace_requests_decoded_total",
];

/// Upper bounds (seconds) of the commit latency histogram.
const COMMIT_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Every metric aotel exports: name, type, help. Rendered even before it has samples, so dashboards
/// and scrapers see the whole catalogue from the first scrape.
pub const CATALOGUE: &[(&str, &str, &str)] = &[
    (
        "aotel_received_spans_total",
        "counter",
        "Spans received, by transport (before validation).",
    ),
    (
        "aotel_received_log_records_total",
        "counter",
        "Log records received, by transport.",
    ),
    (
        "aotel_stored_spans_total",
        "counter",
        "Spans committed (new or changed copies).",
    ),
    (
        "aotel_stored_log_records_total",
        "counter",
        "Log records committed.",
    ),
    (
        "aotel_rejected_requests_total",
        "counter",
        "Requests refused whole, by transport and reason.",
    ),
    (
        "aotel_rejected_spans_total",
        "counter",
        "Spans rejected inside accepted requests, by reason.",
    ),
    (
        "aotel_rejected_log_records_total",
        "counter",
        "Log records rejected inside accepted requests, by reason.",
    ),
    (
        "aotel_trace_requests_decoded_total",
        "counter",
        "Protobuf trace requests decoded by prost because the in-place reader declined them.",
    ),
    (
        "aotel_ingest_queue_requests",
        "gauge",
        "Requests waiting for the writer.",
    ),
    (
        "aotel_ingest_queue_bytes",
        "gauge",
        "Bytes of requests waiting for the writer.",
    ),
    (
        "aotel_commit_failures_total",
        "counter",
        "Group commits that failed and were retried one request at a time.",
    ),
    (
        "aotel_commit_duration_seconds",
        "histogram",
        "Time to write and commit one group of requests.",
    ),
    (
        "aotel_database_bytes",
        "gauge",
        "Size of the SQLite database and its WAL.",
    ),
    (
        "aotel_websocket_clients",
        "gauge",
        "Connected live-view WebSocket clients.",
    ),
    (
        "aotel_forward_lag_spans",
        "gauge",
        "Spans stored but not yet accepted by a forward destination.",
    ),
    (
        "aotel_forward_lag_seconds",
        "gauge",
        "Age of the oldest span not yet accepted by a forward destination.",
    ),
    (
        "aotel_forward_sent_spans_total",
        "counter",
        "Spans a forward destination accepted.",
    ),
    (
        "aotel_forward_errors_total",
        "counter",
        "Failed forward attempts, by destination.",
    ),
    (
        "aotel_forward_dead_letters_total",
        "counter",
        "Batches a destination rejected for good (dead letters).",
    ),
    (
        "aotel_tool_calls_total",
        "counter",
        "Tool calls stored, by tool and outcome.",
    ),
    (
        "aotel_tool_duration_seconds",
        "histogram",
        "Duration of stored tool calls, by tool.",
    ),
    (
        "aotel_sessions",
        "gauge",
        "Sessions in the store, by agent and status.",
    ),
    (
        "aotel_tokens_total",
        "counter",
        "Tokens reported, by model, kind and source (model calls, log events, agent totals).",
    ),
    (
        "aotel_cost_usd_total",
        "counter",
        "Cost reported in USD, by agent and source.",
    ),
];

#[derive(Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

/// In-process counters; cheap enough to update once per request or commit.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), f64>>,
    commit: Mutex<Histogram>,
}

impl Metrics {
    pub fn inc(&self, name: &'static str, labels: String, v: f64) {
        if v == 0.0 {
            return;
        }
        if let Ok(mut c) = self.counters.lock() {
            *c.entry((name, labels)).or_default() += v;
        }
    }

    pub fn observe_commit(&self, seconds: f64) {
        if let Ok(mut h) = self.commit.lock() {
            if h.buckets.is_empty() {
                h.buckets = vec![0; COMMIT_BUCKETS.len()];
            }
            for (i, le) in COMMIT_BUCKETS.iter().enumerate() {
                if seconds <= *le {
                    h.buckets[i] += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        }
    }

    /// Adds this process's samples to `samples` (metric name → lines).
    pub fn collect(&self, samples: &mut Samples) {
        if let Ok(c) = self.counters.lock() {
            for ((name, labels), v) in c.iter() {
                samples.push(name, labels, *v);
            }
            for name in UNLABELLED_COUNTERS {
                if !c.contains_key(&(*name, String::new())) {
                    samples.push(name, "", 0.0);
                }
            }
        }
        if let Ok(h) = self.commit.lock() {
            let name = "aotel_commit_duration_seconds";
            for (i, le) in COMMIT_BUCKETS.iter().enumerate() {
                let n = h.buckets.get(i).copied().unwrap_or(0);
                samples.push_raw(name, format!("{name}_bucket{{le=\"{le}\"}} {n}"));
            }
            samples.push_raw(name, format!("{name}_bucket{{le=\"+Inf\"}} {}", h.count));
            samples.push_raw(name, format!("{name}_sum {}", h.sum));
            samples.push_raw(name, format!("{name}_count {}", h.count));
        }
    }
}

/// Sample lines grouped by metric, rendered in catalogue order.
#[derive(Default)]
pub struct Samples {
    lines: BTreeMap<String, Vec<String>>,
}

impl Samples {
    pub fn push(&mut self, name: &str, labels: &str, v: f64) {
        let line = if labels.is_empty() {
            format!("{name} {v}")
        } else {
            format!("{name}{{{labels}}} {v}")
        };
        self.push_raw(name, line);
    }

    pub fn push_raw(&mut self, name: &str, line: String) {
        self.lines.entry(name.to_string()).or_default().push(line);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help) in CATALOGUE {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            if let Some(lines) = self.lines.get(*name) {
                for l in lines {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}
