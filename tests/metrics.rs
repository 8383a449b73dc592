//! `/metrics`: values after importing a known fixture, ingest counters from real requests, histogram
//! shape, and bounded label cardinality.

mod common;

use aotel::Config;
use common::TestServer;
use std::collections::HashMap;
use std::path::Path;

/// Parses the Prometheus text format into `series -> value` (series = name plus its label text).
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(server: &TestServer) -> (String, HashMap<String, f64>) {
    let resp = reqwest::get(server.url("/metrics"))
        .await
        .expect("GET /metrics");
    assert!(resp.status().is_success());
    let ct = resp.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = resp.text().await.expect("body");
    let values = parse(&text);
    (text, values)
}

fn import(db: &Path, what: &str) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aotel"))
        .arg("import")
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(what),
        )
        .arg("--db")
        .arg(db)
        .output()
        .expect("run aotel import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn imported_fixture_shows_in_agent_metrics() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("aotel.db");
    import(&db, "ao-sessions");
    let server = TestServer::start_at(&db).await;
    let (text, m) = scrape(&server).await;
    let get = |s: &str| {
        m.get(s)
            .copied()
            .unwrap_or_else(|| panic!("no {s} in\n{text}"))
    };
    // The failed Read in architect.jsonl is one tool call with outcome error.
    assert_eq!(
        get(r#"aotel_tool_calls_total{tool="Read",outcome="error"}"#),
        1.0
    );
    assert_eq!(
        get(r#"aotel_tool_calls_total{tool="Read",outcome="ok"}"#),
        1.0
    );
    for tool in ["Bash", "Grep", "Edit"] {
        assert_eq!(
            get(&format!(
                r#"aotel_tool_calls_total{{tool="{tool}",outcome="ok"}}"#
            )),
            1.0
        );
    }
    let calls: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("aotel_tool_calls_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(calls, 5.0);
    assert_eq!(
        get(r#"aotel_sessions{agent="local-codebase-researcher",status="finished"}"#),
        1.0
    );
    assert!(
        (get(r#"aotel_cost_usd_total{agent="local-codebase-researcher",source="agent"}"#)
            - 0.0534445)
            .abs()
            < 1e-9
    );
    assert_eq!(
        get(
            r#"aotel_tokens_total{model="claude-sonnet-4-5-20250929",kind="output",source="agent"}"#
        ),
        908.0
    );
    // Histogram: cumulative buckets in order, +Inf equals _count.
    let read_count = get(r#"aotel_tool_duration_seconds_count{tool="Read"}"#);
    assert_eq!(read_count, 2.0);
    assert_eq!(
        get(r#"aotel_tool_duration_seconds_bucket{tool="Read",le="+Inf"}"#),
        read_count
    );
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(r#"aotel_tool_duration_seconds_bucket{tool="Read","#))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse().ok()))
        .collect();
    assert_eq!(buckets.len(), 13);
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    // The catalogue is always complete.
    for name in [
        "aotel_websocket_clients",
        "aotel_forward_lag_spans",
        "aotel_commit_duration_seconds",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
    }
    server.stop().await;
}

#[tokio::test]
async fn ingest_counters_follow_real_requests() {
    let server = TestServer::start().await;
    // Counters without labels have a sample from the first scrape, so `rate()` works from the start.
    let (text, m) = scrape(&server).await;
    for name in [
        "aotel_stored_spans_total",
        "aotel_stored_log_records_total",
        "aotel_commit_failures_total",
    ] {
        assert_eq!(m.get(name), Some(&0.0), "{name} on a fresh server:\n{text}");
    }
    let client = reqwest::Client::new();
    let good = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060708", "name": "a"},
        {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0000000000000000", "name": "bad id"},
        {"traceId": "0102030405060708090a0b0c0d0e0f10", "spanId": "0102030405060709", "name": "b",
         "parentSpanId": "0102030405060708"}
    ]}]}]});
    let resp = client
        .post(server.otlp_http("/v1/traces"))
        .header("content-type", "application/json")
        .body(good.to_string())
        .send()
        .await
        .expect("POST");
    assert!(resp.status().is_success());
    let resp = client
        .post(server.otlp_http("/v1/traces"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 400);
    let (text, m) = scrape(&server).await;
    let get = |s: &str| {
        m.get(s)
            .copied()
            .unwrap_or_else(|| panic!("no {s} in\n{text}"))
    };
    assert_eq!(get(r#"aotel_received_spans_total{transport="http"}"#), 2.0);
    assert_eq!(
        get(r#"aotel_rejected_spans_total{reason="invalid_id"}"#),
        1.0
    );
    assert_eq!(
        get(r#"aotel_rejected_requests_total{transport="http",reason="malformed"}"#),
        1.0
    );
    assert_eq!(get("aotel_stored_spans_total"), 2.0);
    assert!(get("aotel_commit_duration_seconds_count") >= 1.0);
    assert!(get("aotel_database_bytes") > 0.0);
    server.stop().await;
}

#[tokio::test]
async fn tool_labels_are_capped() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = TestServer::start_with(Config::with_db(dir.path().join("a.db"))).await;
    let spans: Vec<serde_json::Value> = (0..60)
        .map(|i| {
            serde_json::json!({
                "traceId": "0102030405060708090a0b0c0d0e0f11",
                "spanId": format!("{:016x}", i + 1),
                "name": format!("execute_tool t{i}"),
                "attributes": [
                    {"key": "gen_ai.operation.name", "value": {"stringValue": "execute_tool"}},
                    {"key": "gen_ai.tool.name", "value": {"stringValue": format!("t{i}")}}
                ]
            })
        })
        .collect();
    let body = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]});
    common::post_otlp_json(&server, &body).await;
    let (_, m) = scrape(&server).await;
    let tools: Vec<&String> = m
        .keys()
        .filter(|k| k.starts_with("aotel_tool_calls_total{"))
        .collect();
    assert_eq!(tools.len(), 51, "50 tools plus other: {tools:?}");
    assert_eq!(
        m.get(r#"aotel_tool_calls_total{tool="other",outcome="ok"}"#),
        Some(&10.0)
    );
    server.stop().await;
}
