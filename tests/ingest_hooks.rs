//! integrations/python (aotel_hooks) against a running aotel: the ao-* fixture replayed through the real
//! `claude_agent_sdk` hook inputs and message classes gives the documented facts, and an import of the
//! same session file afterwards adds no second copy of anything; the `send_event` drop-in maps the old
//! events like `POST /events` does.

mod common;

use common::{fixtures, TestServer};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const AO: &str = "d796e8ba-ef3c-453f-97d7-b644930563f5";

/// Runs the replay script off the runtime's thread, so the server keeps answering meanwhile.
async fn python(server: &TestServer, args: &[&Path]) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("python3");
    cmd.arg(root.join("tests/python/hooks_replay.py"))
        .args(args)
        .env("PYTHONPATH", root.join("integrations/python"))
        .env("AOTEL_OTLP_ENDPOINT", server.otlp_http(""))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("run python3 (tests/requirements.txt lists what it needs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hooks_replay.py failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("a JSON summary line")
}

fn span_ids(view: &Value) -> BTreeSet<(String, String)> {
    fn walk(spans: &Value, out: &mut BTreeSet<(String, String)>) {
        for s in spans.as_array().unwrap() {
            out.insert((
                s["span_id"].as_str().unwrap().into(),
                s["name"].as_str().unwrap().into(),
            ));
            walk(&s["children"], out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&view["spans"], &mut out);
    out
}

#[tokio::test]
async fn hook_spans_and_an_import_of_the_same_session_coincide() {
    let session_file = fixtures().join("ao-sessions/architect.jsonl");

    // What an import alone gives, for comparison.
    let alone = TestServer::start().await;
    let sink = aotel::ingest::import::Sink::Remote(
        aotel::ingest::client::OtlpHttp::new(&alone.otlp_http("")).unwrap(),
    );
    aotel::ingest::import::import(
        std::slice::from_ref(&session_file),
        &sink,
        |_| {},
        |_, _, _| {},
    )
    .await
    .unwrap();
    let imported = alone.get_json(&format!("/api/sessions/{AO}")).await;
    alone.stop().await;

    let server = TestServer::start().await;
    let sent = python(&server, &[&session_file]).await;
    assert_eq!(sent["runs"], 2);
    assert_eq!(sent["tools"], 5);
    let hooks = server.get_json(&format!("/api/sessions/{AO}")).await;
    let row = &hooks["session"];
    assert_eq!(row["title"], "architect");
    assert_eq!(row["agent"], "local-codebase-researcher");
    assert_eq!(row["status"], "finished");
    assert_eq!(row["runs"], 2);
    assert_eq!(row["tool_calls"], 5);
    assert_eq!(row["tool_errors"], 1);
    assert_eq!(row["usage"]["output_tokens"], 908);
    assert!((row["usage"]["cost_usd"].as_f64().unwrap() - 0.0534445).abs() < 1e-9);
    assert_eq!(row["service"], "ao");
    assert_eq!(
        hooks["traces"].as_array().unwrap().len(),
        1,
        "one trace: the session UUID"
    );

    // The hooks sent nothing the import does not also produce (same ids), so importing now adds nothing.
    let from_hooks = span_ids(&hooks);
    let from_import = span_ids(&imported);
    assert_eq!(
        from_hooks, from_import,
        "hooks and import give the same spans"
    );
    aotel::ingest::import::import(
        &[session_file],
        &aotel::ingest::import::Sink::Remote(
            aotel::ingest::client::OtlpHttp::new(&server.otlp_http("")).unwrap(),
        ),
        |_| {},
        |_, _, _| {},
    )
    .await
    .unwrap();
    let both = server.get_json(&format!("/api/sessions/{AO}")).await;
    assert_eq!(
        both["session"]["spans"], imported["session"]["spans"],
        "one copy of each span"
    );
    assert_eq!(both["session"]["tool_calls"], 5);
    assert_eq!(both["session"]["tool_errors"], 1);
    assert_eq!(both["session"]["runs"], 2);
    assert_eq!(both["session"]["status"], "finished");
    assert_eq!(span_ids(&both), from_import);
    server.stop().await;
}

#[tokio::test]
async fn send_event_drop_in_maps_the_old_events() {
    let server = TestServer::start().await;
    let sent = python(
        &server,
        &[
            Path::new("legacy"),
            &fixtures().join("legacy-events/session.ndjson"),
        ],
    )
    .await;
    assert_eq!(sent["events"], 7);
    let v = server
        .get_json("/api/sessions/7a1c9e55-3b2d-4f80-9e6a-0c5d8b7f2e14")
        .await;
    let row = &v["session"];
    assert_eq!(row["tool_calls"], 2);
    assert_eq!(row["tool_errors"], 1);
    assert_eq!(row["status"], "finished");
    assert_eq!(row["last_unix_nano"], "1763294409100000000");
    let mut spans = Vec::new();
    fn walk(s: &Value, out: &mut Vec<Value>) {
        for x in s.as_array().unwrap() {
            out.push(x.clone());
            walk(&x["children"], out);
        }
    }
    walk(&v["spans"], &mut spans);
    let read = spans.iter().find(|s| s["tool"] == "Read").unwrap();
    assert_eq!(read["duration_ms"], 60.0);
    let bash = spans.iter().find(|s| s["tool"] == "Bash").unwrap();
    assert_eq!(bash["status_message"], "Command failed with exit code 1");
    server.stop().await;
}
